"""The relay core: the iopub journal and the payloads clients receive (protocol-neutral)."""
