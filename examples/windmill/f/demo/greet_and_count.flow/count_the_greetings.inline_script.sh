greetings="$1"

count=$(printf '%s' "$greetings" | grep -o '"greeting"' | wc -l)
echo "{\"count\": $count}"
