// A form for any JSON Schema of script or flow arguments (what `kubemill schema` derives from `main`):
// strings, numbers, booleans, enums as selects, arrays, nested objects, defaults, required marks, descriptions,
// and resource pickers for arguments typed `{"type": "object", "format": "resource-<type>"}`.
import { useEffect, useState } from "preact/hooks";
import { list, type Obj } from "./api";

export type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  order?: string[];
  items?: Schema;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  title?: string;
  format?: string;
  nullable?: boolean;
};

const typeOf = (s: Schema): string => (Array.isArray(s.type) ? s.type.find((t) => t !== "null") ?? "string" : s.type ?? "");

/** The starting value of a schema: its default, or for an object, the defaults of its properties. */
export function initialValue(schema: Schema | undefined): any {
  if (!schema) return {};
  if (schema.default !== undefined && schema.default !== null) return structuredClone(schema.default);
  if (typeOf(schema) === "object" && schema.properties) {
    const out: Record<string, unknown> = {};
    for (const [k, s] of Object.entries(schema.properties)) {
      const v = initialValue(s);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }
  return undefined;
}

/** Required properties that are still empty, by path (to refuse a submit with a clear message). */
export function missingRequired(schema: Schema | undefined, value: any, prefix = ""): string[] {
  if (!schema || typeOf(schema) !== "object" || !schema.properties) return [];
  const out: string[] = [];
  for (const [k, s] of Object.entries(schema.properties)) {
    const v = value?.[k];
    if ((schema.required ?? []).includes(k) && (v === undefined || v === "" || v === null)) out.push(prefix + k);
    else if (v && typeof v === "object" && !Array.isArray(v)) out.push(...missingRequired(s, v, `${prefix}${k}.`));
  }
  return out;
}

function orderOf(schema: Schema): string[] {
  const keys = Object.keys(schema.properties ?? {});
  const order = (schema.order ?? []).filter((k) => keys.includes(k));
  return [...order, ...keys.filter((k) => !order.includes(k))];
}

type FieldProps = { name: string; path: string; schema: Schema; required: boolean; value: any; onChange: (v: any) => void; ns: string };

export function SchemaForm(props: { schema: Schema | undefined; value: any; onChange: (v: any) => void; ns: string; idPrefix?: string }) {
  const schema = props.schema ?? { type: "object", properties: {} };
  if (!schema.properties || Object.keys(schema.properties).length === 0)
    return <p class="muted">This takes no arguments.</p>;
  return (
    <div class="schema-form">
      <ObjectFields schema={schema} value={props.value ?? {}} onChange={props.onChange} ns={props.ns} path={props.idPrefix ?? "arg"} />
    </div>
  );
}

function ObjectFields(p: { schema: Schema; value: any; onChange: (v: any) => void; ns: string; path: string }) {
  return (
    <>
      {orderOf(p.schema).map((key) => (
        <Field
          key={key}
          name={key}
          path={`${p.path}-${key}`}
          schema={p.schema.properties![key]}
          required={(p.schema.required ?? []).includes(key)}
          value={p.value?.[key]}
          ns={p.ns}
          onChange={(v) => {
            const next = { ...(p.value ?? {}) };
            if (v === undefined) delete next[key];
            else next[key] = v;
            p.onChange(next);
          }}
        />
      ))}
    </>
  );
}

function Label(p: { name: string; path: string; schema: Schema; required: boolean }) {
  return (
    <label for={p.path} class="field-label">
      {p.schema.title ?? p.name}
      {p.required && <span class="required" title="required"> *</span>}
      <span class="type-hint">{p.schema.format?.startsWith("resource-") ? p.schema.format : typeOf(p.schema)}</span>
    </label>
  );
}

function Field(p: FieldProps) {
  const type = typeOf(p.schema);
  let input;
  if (p.schema.format?.startsWith("resource-")) input = <ResourcePicker {...p} type={p.schema.format.slice(9)} />;
  else if (p.schema.enum) input = <EnumSelect {...p} />;
  else if (type === "boolean")
    input = <input id={p.path} name={p.name} type="checkbox" checked={!!p.value} onChange={(e) => p.onChange((e.target as HTMLInputElement).checked)} />;
  else if (type === "integer" || type === "number")
    input = (
      <input
        id={p.path}
        name={p.name}
        type="number"
        step={type === "integer" ? 1 : "any"}
        value={p.value ?? ""}
        required={p.required}
        onInput={(e) => {
          const raw = (e.target as HTMLInputElement).value;
          p.onChange(raw === "" ? undefined : Number(raw));
        }}
      />
    );
  else if (type === "array") input = <ArrayField {...p} />;
  else if (type === "object" && p.schema.properties)
    return (
      <fieldset class="nested" id={p.path}>
        <legend>
          {p.name}
          {p.required && <span class="required"> *</span>}
        </legend>
        {p.schema.description && <p class="description">{p.schema.description}</p>}
        <ObjectFields schema={p.schema} value={p.value ?? {}} onChange={p.onChange} ns={p.ns} path={p.path} />
      </fieldset>
    );
  else if (type === "object" || type === "") input = <JsonField {...p} />;
  else
    input = (
      <input
        id={p.path}
        name={p.name}
        type={p.schema.format === "email" ? "email" : "text"}
        value={p.value ?? ""}
        required={p.required}
        onInput={(e) => {
          const raw = (e.target as HTMLInputElement).value;
          p.onChange(raw === "" && !p.required ? undefined : raw);
        }}
      />
    );
  return (
    <div class="field" data-field={p.name}>
      <Label {...p} />
      {input}
      {p.schema.description && <p class="description">{p.schema.description}</p>}
    </div>
  );
}

function EnumSelect(p: FieldProps) {
  const options = p.schema.enum ?? [];
  const index = options.findIndex((o) => JSON.stringify(o) === JSON.stringify(p.value));
  return (
    <select id={p.path} name={p.name} value={index < 0 ? "" : String(index)} onChange={(e) => {
      const i = (e.target as HTMLSelectElement).value;
      p.onChange(i === "" ? undefined : options[Number(i)]);
    }}>
      <option value="">{p.required ? "— choose —" : "— none —"}</option>
      {options.map((o, i) => (
        <option value={String(i)}>{typeof o === "string" ? o : JSON.stringify(o)}</option>
      ))}
    </select>
  );
}

function ArrayField(p: FieldProps) {
  const items: any[] = Array.isArray(p.value) ? p.value : [];
  const itemSchema: Schema = p.schema.items ?? {};
  const set = (next: any[]) => p.onChange(next);
  return (
    <div class="array" id={p.path}>
      {items.map((item, i) => (
        <div class="array-item">
          <Field
            name={`${p.name}[${i}]`}
            path={`${p.path}-${i}`}
            schema={itemSchema}
            required={false}
            value={item}
            ns={p.ns}
            onChange={(v) => set(items.map((x, j) => (j === i ? v : x)))}
          />
          <button type="button" class="small" onClick={() => set(items.filter((_, j) => j !== i))}>
            remove
          </button>
        </div>
      ))}
      <button type="button" class="small" onClick={() => set([...items, initialValue(itemSchema) ?? (typeOf(itemSchema) === "string" ? "" : undefined)])}>
        add {p.name} item
      </button>
    </div>
  );
}

function JsonField(p: FieldProps) {
  const [text, setText] = useState(p.value === undefined ? "" : JSON.stringify(p.value, null, 2));
  const [error, setError] = useState("");
  return (
    <>
      <textarea
        id={p.path}
        name={p.name}
        rows={3}
        placeholder="JSON"
        value={text}
        onInput={(e) => {
          const raw = (e.target as HTMLTextAreaElement).value;
          setText(raw);
          if (!raw.trim()) {
            setError("");
            p.onChange(undefined);
            return;
          }
          try {
            p.onChange(JSON.parse(raw));
            setError("");
          } catch {
            setError("not valid JSON yet");
          }
        }}
      />
      {error && <span class="field-error">{error}</span>}
    </>
  );
}

function ResourcePicker(p: FieldProps & { type: string }) {
  const [resources, setResources] = useState<Obj[] | null>(null);
  useEffect(() => {
    list(p.ns, "resources")
      .then((items) => setResources(items.filter((r) => r.spec.resourceType === p.type)))
      .catch(() => setResources([]));
  }, [p.ns, p.type]);
  return (
    <select id={p.path} name={p.name} value={p.value ?? ""} onChange={(e) => {
      const v = (e.target as HTMLSelectElement).value;
      p.onChange(v || undefined);
    }}>
      <option value="">{resources === null ? "loading…" : resources.length ? "— choose a resource —" : `no ${p.type} resources`}</option>
      {(resources ?? []).map((r) => (
        <option value={`$res:${r.spec.path}`}>{r.spec.path}</option>
      ))}
    </select>
  );
}
