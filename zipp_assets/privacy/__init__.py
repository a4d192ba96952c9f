"""Re-identification risk: the linkage attack, uniqueness by quasi-identifiers, k-anonymous export."""
