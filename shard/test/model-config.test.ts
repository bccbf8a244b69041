import { writeFileSync } from "node:fs";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ModelConfigError, parseModelConfig, readModelConfig } from "../model-config.js";

function modelDir(t: Test, config: unknown): string {
  const dir = t.testdir({});
  writeFileSync(join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config));
  return dir;
}

// Field values as published on the Hugging Face hub (shapes trimmed where irrelevant).
const llama2 = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 11008,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  vocab_size: 32000,
};

const llama31 = {
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 14336,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  attention_bias: false,
  mlp_bias: false,
  head_dim: 128,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
  eos_token_id: [128001, 128008, 128009],
};

const mistral = {
  model_type: "mistral",
  hidden_size: 4096,
  intermediate_size: 14336,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 32768,
};

const qwen2 = {
  model_type: "qwen2",
  hidden_size: 896,
  intermediate_size: 4864,
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  use_sliding_window: false,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  vocab_size: 151936,
};

t.test("llama 2", async (t) => {
  const { config, dtype } = readModelConfig(modelDir(t, llama2));
  t.same(config, {
    architecture: "llama",
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    headDim: 128,
    vocabSize: 32000,
    maxPositionEmbeddings: 4096,
    rmsNormEps: 1e-5,
    rope: { theta: 10000, scaling: "none", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4096 },
    tieWordEmbeddings: false,
    attentionBias: false,
    slidingWindow: 0,
  });
  t.equal(dtype, "float16");
});

t.test("llama 3.1 with llama3 rope scaling", async (t) => {
  const { config, dtype } = readModelConfig(modelDir(t, llama31));
  t.same(config.rope, {
    theta: 500000,
    scaling: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  t.equal(config.numKvHeads, 8);
  t.equal(config.headDim, 128);
  t.equal(config.tieWordEmbeddings, false);
  t.equal(dtype, "bfloat16");
});

t.test("llama 3.2 style: explicit head_dim, tied embeddings, dtype field", async (t) => {
  const { config, dtype } = parseModelConfig({
    ...llama31,
    hidden_size: 3072,
    num_attention_heads: 24,
    head_dim: 128,
    tie_word_embeddings: true,
    torch_dtype: undefined,
    dtype: "float32",
    rope_scaling: { ...llama31.rope_scaling, factor: 32.0 },
  });
  t.equal(config.headDim, 128);
  t.equal(config.tieWordEmbeddings, true);
  t.equal(config.rope.factor, 32);
  t.equal(dtype, "float32");
});

t.test("linear and dynamic rope scaling, legacy `type` key", async (t) => {
  const linear = parseModelConfig({ ...llama2, rope_scaling: { type: "linear", factor: 2.0 } }).config.rope;
  t.equal(linear.scaling, "linear");
  t.equal(linear.factor, 2);
  const dynamic = parseModelConfig({ ...llama2, rope_scaling: { rope_type: "dynamic", factor: 4.0 } }).config.rope;
  t.equal(dynamic.scaling, "dynamic");
  t.equal(dynamic.originalMaxPositionEmbeddings, 4096);
  t.equal(parseModelConfig({ ...llama2, rope_scaling: { rope_type: "default" } }).config.rope.scaling, "none");
  const v5 = parseModelConfig({ ...llama2, rope_parameters: { rope_type: "default", rope_theta: 50000 } }).config.rope;
  t.equal(v5.theta, 50000);
  t.equal(v5.scaling, "none");
});

t.test("mistral: null sliding window, and a real one", async (t) => {
  const { config } = readModelConfig(modelDir(t, mistral));
  t.equal(config.architecture, "mistral");
  t.equal(config.slidingWindow, 0);
  t.equal(config.rope.theta, 1000000);
  t.equal(parseModelConfig({ ...mistral, sliding_window: 4096 }).config.slidingWindow, 4096);
});

t.test("qwen2: q/k/v bias, sliding window off unless use_sliding_window", async (t) => {
  const { config } = readModelConfig(modelDir(t, qwen2));
  t.equal(config.architecture, "qwen2");
  t.equal(config.attentionBias, true);
  t.equal(config.slidingWindow, 0);
  t.equal(config.headDim, 64);
  t.equal(config.tieWordEmbeddings, true);
  // Transformers windows only the layers from max_window_layers on.
  t.equal(parseModelConfig({ ...qwen2, use_sliding_window: true, max_window_layers: 24 }).config.slidingWindow, 0);
  t.equal(parseModelConfig({ ...qwen2, use_sliding_window: true, max_window_layers: 0 }).config.slidingWindow, 32768);
  t.throws(() => parseModelConfig({ ...qwen2, use_sliding_window: true }), {
    message: /sliding window on only some layers \(max_window_layers 21 of 24\)/,
  });
});

t.test("defaults: kv heads, max positions, eps, tie", async (t) => {
  const { config, dtype } = parseModelConfig({
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 128,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    vocab_size: 100,
  });
  t.equal(config.numKvHeads, 4);
  t.equal(config.maxPositionEmbeddings, 2048);
  t.equal(config.rmsNormEps, 1e-6);
  t.equal(config.tieWordEmbeddings, false);
  t.equal(dtype, undefined);
});

t.test("stories260k", async (t) => {
  const { config } = readModelConfig(join(import.meta.dirname, "../../models/stories260k"));
  t.match(config, { numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8, vocabSize: 512, tieWordEmbeddings: true });
});

t.test("errors name the file and the field", async (t) => {
  const empty = t.testdir({});
  t.throws(() => readModelConfig(empty), new ModelConfigError(`model dir ${empty} has no config.json`));
  t.throws(() => readModelConfig(modelDir(t, "{oops")), { message: /config\.json is not valid JSON/ });
  t.throws(() => parseModelConfig({ ...llama2, model_type: "gpt2" }), {
    message: "config.json: unsupported model_type 'gpt2' (supported: llama, mistral, qwen2)",
  });
  t.throws(() => parseModelConfig({ ...llama2, model_type: undefined }), { message: /missing field 'model_type'/ });
  t.throws(() => parseModelConfig({ ...llama2, hidden_size: undefined }), {
    message: "config.json: missing field 'hidden_size'",
  });
  t.throws(() => parseModelConfig({ ...llama2, num_hidden_layers: "32" }), {
    message: `config.json: field 'num_hidden_layers' must be a positive number (got "32")`,
  });
  t.throws(() => parseModelConfig({ ...llama2, num_key_value_heads: 5 }), { message: /multiple of num_key_value_heads/ });
  t.throws(() => parseModelConfig({ ...llama2, rope_scaling: { rope_type: "yarn", factor: 4 } }), {
    message: /unsupported rope_scaling type 'yarn'/,
  });
  t.throws(() => parseModelConfig({ ...llama31, rope_scaling: { rope_type: "llama3" } }), {
    message: "config.json: missing field 'rope_scaling.factor'",
  });
  t.throws(() => parseModelConfig({ ...llama2, hidden_act: "gelu" }), { message: /unsupported hidden_act 'gelu'/ });
  t.throws(() => parseModelConfig([]), { message: /expected a JSON object/ });
});
