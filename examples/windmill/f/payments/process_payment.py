import json
import urllib.request

import wmill


def main(order_id: str, amount: float):
    """Charge `amount` for `order_id` and return the payment id."""
    api = wmill.get_resource("u/admin/payments_api")
    request = urllib.request.Request(
        f"{api['base_url']}/payments",
        data=json.dumps({"order_id": order_id, "amount": amount}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api['api_key']}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payment = json.load(response)
    return {"order_id": order_id, "amount": amount, "payment_id": payment["id"], "status": payment["status"]}
