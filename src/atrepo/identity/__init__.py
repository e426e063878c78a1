"""Identity: DID documents, did:plc, did:web, handles, and a local PLC directory.

``document`` and ``plc.operations`` are pure; ``resolver``, ``handle`` and the
PLC directory server do the I/O above them.
"""
