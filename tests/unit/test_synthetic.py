import hashlib

from training.synthetic import BankSpec, generate


def digest(spec: BankSpec, tmp_path, name: str) -> str:
    out = tmp_path / name
    generate(spec).write(out)
    return hashlib.sha256(
        b"".join(
            (out / f).read_bytes()
            for f in ("customers.parquet", "events.parquet", "consents.parquet")
        )
    ).hexdigest()


def test_same_seed_same_bytes_different_seed_different_bank(tmp_path) -> None:
    spec = BankSpec(seed=5, customers=50, days=20)
    assert digest(spec, tmp_path, "a") == digest(spec, tmp_path, "b")
    assert digest(BankSpec(seed=6, customers=50, days=20), tmp_path, "c") != digest(
        spec, tmp_path, "a"
    )


def test_the_planted_mortgage_signal_is_there() -> None:
    bank = generate(BankSpec(seed=3, customers=3000, days=90))
    events = bank.events
    applied = set(events[(events["type"] == "application")]["customer_id"])
    browsed = events[
        (events["type"] == "page_view") & events["payload"].str.contains("mortgage_calculator")
    ]["customer_id"]
    heavy = set(browsed.value_counts()[lambda s: s >= 3].index)
    everyone = set(bank.customers["customer_id"])
    rate_heavy = len(applied & heavy) / len(heavy)
    rate_rest = len(applied - heavy) / len(everyone - heavy)
    assert rate_heavy > 5 * rate_rest
