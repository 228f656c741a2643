"""A synthetic bank that behaves like a real one, with known ground truth.

``generate(spec)`` builds a small bank in memory (tests, demo); ``write_bank(spec, out)`` streams
a bank of any size to Parquet, one chunk of customers at a time. Both give the same bytes for the
same spec. See ``docs/synthetic-bank.md`` for the model behind it.
"""

from consent.rules.vocabulary import NEEDS
from training.bank.in_memory import Bank, generate
from training.bank.spec import BankSpec, ConsentMix, busy_housing_market
from training.bank.store import write_bank

__all__ = [
    "NEEDS",
    "Bank",
    "BankSpec",
    "ConsentMix",
    "busy_housing_market",
    "generate",
    "write_bank",
]
