import * as wmill from "npm:windmill-client@1";

type Item = { sku: string; quantity: number };

export async function main(items: Item[]): Promise<{ available: boolean; missing: string[] }> {
  const api = await wmill.getResource("u/admin/inventory_api");
  const response = await fetch(`${api.base_url}/inventory/check`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${api.api_key}` },
    body: JSON.stringify({ items }),
  });
  if (!response.ok) {
    throw new Error(`inventory service answered ${response.status}`);
  }
  const stock: Record<string, number> = (await response.json()).stock;
  const missing = items.filter((i) => (stock[i.sku] ?? 0) < i.quantity).map((i) => i.sku);
  return { available: missing.length === 0, missing };
}
