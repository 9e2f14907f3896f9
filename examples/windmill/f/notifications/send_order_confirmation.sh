email="$1"
order_details="$2"

echo "sending confirmation to $email: $order_details" >&2
echo "{\"sent_to\": \"$email\", \"order\": $order_details}"
