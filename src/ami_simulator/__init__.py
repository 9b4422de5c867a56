"""A faithful AMI simulator, derived from captures of real Asterisk, for the demo and tests.

:class:`ami_simulator.server.SimulatedAsterisk` is the server (``ami-simulator`` on the command
line, ``python -m ami_simulator``); its call scripts are package data generated from the
repository's captures by ``tools/generate_simulator_scripts.py`` (Local calls) and
``tools/generate_pjsip_scripts.py`` (PJSIP carriers, queue, the PJSIP answers; see
:mod:`ami_simulator.scripts` and :mod:`ami_simulator.trunks`).
"""
