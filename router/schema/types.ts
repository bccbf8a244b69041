// The JSON Schema subset our request and response schemas are written in
// (OpenAPI 3.1 schema objects), and builders that keep them short.

export interface JsonSchema {
  $ref?: string;
  title?: string;
  description?: string;
  type?: JsonType | JsonType[];
  /** Numbers: int32 (i32), uint32 (u32), uint (usize), uint64 (u64), float (f32), double (f64). */
  format?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  enum?: (string | number | boolean | null)[];
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  /** With oneOf: a serde tagged enum; each variant's tag property is an enum of one name. */
  discriminator?: { propertyName: string };
  default?: unknown;
  example?: unknown;
  examples?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  nullable?: never; // OpenAPI 3.0 only: write type: [T, "null"] instead.
}

export type JsonType = "null" | "boolean" | "integer" | "number" | "string" | "array" | "object";

/** Named schemas, as in an OpenAPI document's components.schemas. */
export type SchemaComponents = Record<string, JsonSchema>;

/** A reference to components.schemas[name]. */
export const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });

/** serde's Option<T>: the same schema, null also allowed. A $ref becomes oneOf [ref, null]. */
export function nullable(schema: JsonSchema): JsonSchema {
  if (schema.$ref !== undefined) return { oneOf: [schema, { type: "null" }] };
  // A variant list gets a null variant (a sibling `type: "null"` would AND with it).
  if (schema.oneOf !== undefined) return { ...schema, oneOf: [...schema.oneOf, { type: "null" }] };
  if (schema.anyOf !== undefined) return { ...schema, anyOf: [...schema.anyOf, { type: "null" }] };
  const base = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  return { ...schema, type: [...base.filter((t) => t !== "null"), "null"] };
}

/** An object schema with a title (serde's "expected struct <title>"). */
export function struct(
  title: string,
  properties: Record<string, JsonSchema>,
  required: string[] = [],
  extra: Partial<JsonSchema> = {},
): JsonSchema {
  return { title, type: "object", required, properties, ...extra };
}
