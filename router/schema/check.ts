// A small JSON Schema (OpenAPI 3.1 subset) checker whose failures read like
// serde's, so one schema both documents a request body (docs/openapi.json)
// and decides whether the router accepts it.
//
// Checked keywords: type (one or a list, "null" = Option), format (Rust number
// types, below), properties, required, additionalProperties: false, items,
// enum (strings), oneOf/anyOf (with discriminator: tagged; without: untagged),
// minItems, $ref to "#/components/schemas/<name>". Everything else (minimum,
// exclusiveMinimum, maximum, default, example, description) only documents:
// the value rules and their TGI messages live in router/validation/.
//
// Unknown fields are accepted unless additionalProperties is false (serde
// without deny_unknown_fields). A property whose schema does not allow null
// rejects an explicit null ("invalid type: null, expected a boolean").
import type { JsonSchema, SchemaComponents } from "./types.js";

/** A body that does not fit its schema: `path` as serde writes it ("parameters.stop[1]"), `detail` its message. */
export class SchemaError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(path === "" ? detail : `${path}: ${detail}`);
    this.name = "SchemaError";
  }
}

/** integer/number formats → the Rust type serde names, and the range it accepts (checked only for integers). */
const NUMBER_FORMATS: Record<string, { rust: string; min?: number; max?: number }> = {
  int32: { rust: "i32", min: -2147483648, max: 2147483647 },
  uint32: { rust: "u32", min: 0, max: 4294967295 },
  // usize: integers up to 2^53 - 1 (what a JSON number keeps exactly here).
  uint: { rust: "usize", min: 0, max: Number.MAX_SAFE_INTEGER },
  // u64 seeds: any number passes the shape; router/validation/seed.ts gives the range message.
  uint64: { rust: "u64" },
  float: { rust: "f32" },
  double: { rust: "f64" },
};

/** serde's description of an unexpected value ("integer `3`", "string \"x\"", "sequence"). */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "sequence";
  switch (typeof value) {
    case "string":
      return `string ${JSON.stringify(value)}`;
    case "boolean":
      return `boolean \`${value}\``;
    case "number":
      return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
    default:
      return "map";
  }
}

const REF_PREFIX = "#/components/schemas/";

function resolve(schema: JsonSchema, components: SchemaComponents): JsonSchema {
  let s = schema;
  for (let depth = 0; s.$ref !== undefined; depth++) {
    const name = s.$ref.startsWith(REF_PREFIX) ? s.$ref.slice(REF_PREFIX.length) : undefined;
    const target = name === undefined ? undefined : components[name];
    if (target === undefined || depth > 32) throw new Error(`schema reference ${s.$ref} does not resolve`);
    s = target;
  }
  return s;
}

const types = (s: JsonSchema): string[] => (s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type]);

/** What serde says it expected for a schema ("a string", "u32", "struct GenerateParameters"). */
function expected(s: JsonSchema): string {
  if (s.enum !== undefined || s.discriminator !== undefined) return `enum ${s.title ?? "value"}`;
  const t = types(s).filter((x) => x !== "null");
  switch (t[0]) {
    case "string":
      return "a string";
    case "boolean":
      return "a boolean";
    case "array":
      return "a sequence";
    case "object":
      return s.title !== undefined ? `struct ${s.title}` : "a map";
    case "integer":
      return NUMBER_FORMATS[s.format ?? ""]?.rust ?? "i64";
    case "number":
      return NUMBER_FORMATS[s.format ?? ""]?.rust ?? "f64";
    default:
      return s.title ?? "a value";
  }
}

function typeMatches(t: string, v: unknown): boolean {
  switch (t) {
    case "null":
      return v === null;
    case "string":
      return typeof v === "string";
    case "boolean":
      return typeof v === "boolean";
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "array":
      return Array.isArray(v);
    case "object":
      return v !== null && typeof v === "object" && !Array.isArray(v);
    default:
      return false;
  }
}

const join = (path: string, key: string) => (path === "" ? key : `${path}.${key}`);
const quoteList = (names: string[]) => names.map((n) => `\`${n}\``).join(", ");

/** Throws a SchemaError at the first place `value` does not fit `schema`. */
export function check(schema: JsonSchema, value: unknown, components: SchemaComponents = {}, path = ""): void {
  const s = resolve(schema, components);
  const fail = (detail: string): never => {
    throw new SchemaError(path, detail);
  };
  const variants = s.oneOf ?? s.anyOf;
  if (variants !== undefined) {
    const isNull = (v: JsonSchema) => v.type === "null";
    const nonNull = variants.filter((v) => !isNull(v));
    if (value === null && (types(s).includes("null") || nonNull.length < variants.length)) return;
    if (s.discriminator !== undefined) return checkTagged(s, nonNull, value, components, path);
    // Option<T> written as oneOf [T, null]: T's own message.
    if (nonNull.length === 1) return check(nonNull[0]!, value, components, path);
    for (const variant of nonNull) {
      try {
        check(variant, value, components, path);
        return;
      } catch (err) {
        if (!(err instanceof SchemaError)) throw err;
      }
    }
    return fail(`data did not match any variant of untagged enum ${s.title ?? "value"}`);
  }

  const allowed = types(s);
  if (allowed.length > 0 && !allowed.some((t) => typeMatches(t, value))) {
    // serde reports an integer outside a wider type's range as a value error, a float as a type error.
    return fail(`invalid type: ${describeValue(value)}, expected ${expected(s)}`);
  }
  if (value === null) return;
  if (typeof value === "number" && allowed.includes("integer") && !allowed.includes("number")) {
    const range = NUMBER_FORMATS[s.format ?? ""];
    if (range?.min !== undefined && (value < range.min || value > range.max!)) {
      return fail(`invalid value: ${describeValue(value)}, expected ${range.rust}`);
    }
  }
  if (typeof value === "string" && s.enum !== undefined && !s.enum.includes(value)) {
    return fail(`unknown variant \`${value}\`, expected one of ${quoteList(s.enum.map(String))}`);
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < s.minItems) {
      return fail(`invalid length ${value.length}, expected at least ${s.minItems} element${s.minItems === 1 ? "" : "s"}`);
    }
    if (s.items !== undefined) value.forEach((item, i) => check(s.items!, item, components, `${path}[${i}]`));
    return;
  }
  if (typeof value === "object") checkObject(s, value as Record<string, unknown>, components, path);
}

function checkObject(s: JsonSchema, obj: Record<string, unknown>, components: SchemaComponents, path: string): void {
  const props = s.properties ?? {};
  for (const key of s.required ?? []) {
    if (!Object.hasOwn(obj, key)) throw new SchemaError(path, `missing field \`${key}\``);
  }
  for (const [key, value] of Object.entries(obj)) {
    const prop = Object.hasOwn(props, key) ? props[key] : undefined;
    if (prop !== undefined) {
      check(prop, value, components, join(path, key));
    } else if (s.additionalProperties === false) {
      throw new SchemaError(path, `unknown field \`${key}\`, expected one of ${quoteList(Object.keys(props))}`);
    } else if (typeof s.additionalProperties === "object") {
      check(s.additionalProperties, value, components, join(path, key));
    }
  }
}

/** serde's adjacently tagged enum: `{"type": <variant>, ...}`; each variant pins the tag with an enum of one. */
function checkTagged(s: JsonSchema, variants: JsonSchema[], value: unknown, components: SchemaComponents, path: string): void {
  const tagKey = s.discriminator!.propertyName;
  if (!typeMatches("object", value)) {
    throw new SchemaError(path, `invalid type: ${describeValue(value)}, expected ${expected(s)}`);
  }
  const tag = (value as Record<string, unknown>)[tagKey];
  const names = variants.map((v) => String(resolve(v, components).properties?.[tagKey]?.enum?.[0]));
  const index = typeof tag === "string" ? names.indexOf(tag) : -1;
  if (index < 0) {
    if (tag === undefined) throw new SchemaError(path, `missing field \`${tagKey}\``);
    throw new SchemaError(path, `unknown variant \`${String(tag)}\`, expected one of ${quoteList(names)}`);
  }
  check(variants[index]!, value, components, path);
}
