"""Say hello, count how many times this script has run (Windmill state), and return a summary."""

import wmill


def main(name: str = "world", excited: bool = False) -> dict:
    """Greet someone.

    Args:
        name: who to greet
        excited: end with an exclamation mark
    """
    runs = (wmill.get_state() or 0) + 1
    wmill.set_state(runs)
    greeting = f"Hello, {name}" + ("!" if excited else ".")
    return {"greeting": greeting, "runs": runs, "workspace": wmill.get_workspace()}
