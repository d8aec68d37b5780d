"""An order that waits for its payment (a message) or gives up after a timeout, publishing its
status as it goes.

    durapipe run examples/order.py:order --input order_id=A-17 --input amount=42.5

The run prints its id first and waits. From another terminal:

    durapipe events RUN_ID                          # status  awaiting_payment
    durapipe send RUN_ID paid '{"receipt": "r-991"}'
    durapipe events RUN_ID --wait shipped           # waits until the run publishes it

A payment sent before the order asks for it is kept; a message on topic ``cancel`` ends the
wait too, and so does the timeout (``--input pay_within=SECONDS``, an hour by default). The wait is
one journaled call: a replay returns the same winner, and a message it did not take stays
queued. With workers: ``durapipe start`` instead of ``durapipe run``, and ``durapipe worker -m
examples/order.py``.
"""

import durapipe as dp


@dp.step
def charge_receipt(order_id: str, receipt: str) -> str:
    """Stands in for booking the payment; returns what the books say."""
    return f"order {order_id} paid ({receipt})"


@dp.pipeline(version="1")
async def order(order_id: str, amount: float, pay_within: float = 3600) -> dict[str, str]:
    await dp.set_event("status", "awaiting_payment")
    got = await dp.first(dp.recv("paid"), dp.recv("cancel"), dp.sleep(pay_within))
    if got.index == 1:
        await dp.set_event("status", "cancelled")
        return {"order": order_id, "status": "cancelled"}
    if got.index == 2:
        await dp.set_event("status", "expired")
        return {"order": order_id, "status": "expired"}
    payment = got.value
    receipt = str(payment.get("receipt", "?")) if isinstance(payment, dict) else str(payment)
    booked = await charge_receipt(order_id, receipt)
    await dp.set_event("status", "paid")
    await dp.set_event("shipped", {"order": order_id, "amount": amount})
    return {"order": order_id, "status": "paid", "books": booked}
