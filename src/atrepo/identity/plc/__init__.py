"""did:plc: operations and audit logs (pure), a directory server and client."""
