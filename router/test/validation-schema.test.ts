// router/schema/check.ts: serde-style messages for each keyword it enforces.
import t from "tap";
import { check, nullable, ref, struct, type JsonSchema, type SchemaComponents } from "../schema/index.js";

const components: SchemaComponents = {
  Req: struct(
    "Req",
    {
      name: { type: "string" },
      n: nullable({ type: "integer", format: "uint32" }),
      k: { type: "integer", format: "int32" },
      size: { type: "integer", format: "uint" },
      f: { type: "number", format: "float" },
      role: { type: "string", enum: ["user", "assistant"] },
      list: { type: "array", items: { type: "string" }, minItems: 1 },
      stop: nullable({ title: "Stop", anyOf: [{ type: "string" }, { type: "array", items: { type: "string" } }] }),
      inner: nullable(ref("Inner")),
      strict: struct("Strict", { a: { type: "boolean" } }, [], { additionalProperties: false }),
    },
    ["name"],
  ),
  Inner: struct("Inner", { x: { type: "boolean" } }, ["x"]),
};

const fails = (value: unknown, message: string) => t.throws(() => check(ref("Req"), value, components), { name: "SchemaError", message }, message);

t.test("accepts what fits, ignores unknown fields", async (t) => {
  t.doesNotThrow(() => check(ref("Req"), { name: "a", n: null, stop: "x", inner: null, extra: [1] }, components));
  t.doesNotThrow(() => check(ref("Req"), { name: "a", stop: ["x"], inner: { x: true }, list: ["a"], role: "user", f: 1, k: -5 }, components));
});

t.test("serde messages", async () => {
  fails([], "invalid type: sequence, expected struct Req");
  fails({}, "missing field `name`");
  fails({ name: 1 }, "name: invalid type: integer `1`, expected a string");
  fails({ name: "a", n: -1 }, "n: invalid value: integer `-1`, expected u32");
  fails({ name: "a", n: 2 ** 32 }, "n: invalid value: integer `4294967296`, expected u32");
  fails({ name: "a", n: 0.5 }, "n: invalid type: floating point `0.5`, expected u32");
  fails({ name: "a", k: 2 ** 31 }, "k: invalid value: integer `2147483648`, expected i32");
  fails({ name: "a", size: -1 }, "size: invalid value: integer `-1`, expected usize");
  fails({ name: "a", f: "1" }, 'f: invalid type: string "1", expected f32');
  fails({ name: "a", f: null }, "f: invalid type: null, expected f32");
  fails({ name: "a", role: "robot" }, "role: unknown variant `robot`, expected one of `user`, `assistant`");
  fails({ name: "a", list: [] }, "list: invalid length 0, expected at least 1 element");
  fails({ name: "a", list: ["a", false] }, "list[1]: invalid type: boolean `false`, expected a string");
  fails({ name: "a", stop: 3 }, "stop: data did not match any variant of untagged enum Stop");
  fails({ name: "a", inner: {} }, "inner: missing field `x`");
  fails({ name: "a", inner: { x: 1 } }, "inner.x: invalid type: integer `1`, expected a boolean");
  fails({ name: "a", strict: { b: 1 } }, "strict: unknown field `b`, expected one of `a`");
});

t.test("nullable never ANDs null with a variant list", async (t) => {
  const s = nullable({ anyOf: [{ type: "string" }] }) as JsonSchema;
  t.same(s, { anyOf: [{ type: "string" }, { type: "null" }] });
  t.same(nullable({ type: "integer" }), { type: ["integer", "null"] });
  t.same(nullable(ref("X")), { oneOf: [{ $ref: "#/components/schemas/X" }, { type: "null" }] });
  t.throws(() => check(ref("Missing"), 1, components), { message: "schema reference #/components/schemas/Missing does not resolve" });
});
