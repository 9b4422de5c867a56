"""The AMI protocol, sans-IO: framing and parsing, the session state machine, value parsing.

Nothing here touches a socket or imports anything else of the package; the asyncio client,
``check``, the simulator and the test server all drive the same code.
"""
