"""Model adapters in the spirit of pycoral: small functions taking the interpreter first."""
