"""Reference roles: key store, simulated QKD module, key manager, QKDN controller."""
