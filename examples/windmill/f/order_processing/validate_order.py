def main(order: dict):
    """Check an order and compute its total.

    Args:
        order: customer_email, items (sku, quantity, unit_price), shipping_address and an optional order_id
    """
    items = order.get("items") or []
    if not items:
        raise ValueError("an order needs at least one item")
    for item in items:
        if item.get("quantity", 0) <= 0:
            raise ValueError(f"item {item.get('sku')!r} has no quantity")
    total = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
    return {
        "order_id": order.get("order_id") or f"ord-{abs(hash(order['customer_email'])) % 100000:05d}",
        "customer_email": order["customer_email"],
        "items": items,
        "total": total,
        "shipping_address": order["shipping_address"],
    }
