"""The asyncio side of AMI: sockets, TLS, reconnects with backoff, and the periodic polls.

It only moves bytes between a socket and the sans-IO session and hands what arrives to the
server's state.
"""
