def main(names: str = "Ada, Grace") -> list:
    return [name.strip() for name in names.split(",") if name.strip()]
