"""The pure core of consent: the domain model, the catalog, the policy and its gate,
arbitration and simulation. Imports no database, broker or HTTP code."""
