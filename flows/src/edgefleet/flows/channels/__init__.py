"""Channel pointer upkeep: the warning about pointers close to expiry (`expiry`).

Re-signing and converting pointers are the sign side: `edgefleet.flows.trust`.
"""
