"""qkdn-sdk: the ITU-T QKD network protocols (Q.4161 Ak, Q.4162 Kq-1, Q.4164 Ck) in Python."""
