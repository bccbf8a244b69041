// See js_convert.h.
#include "addon/js_convert.h"

#include <cmath>
#include <string>

namespace tg {
namespace addon {
namespace {

[[noreturn]] void Fail(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

Napi::Object AsObject(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray()) Fail(v.Env(), what + " must be an object");
  return v.As<Napi::Object>();
}

double Number(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) Fail(o.Env(), where + "." + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) Fail(o.Env(), where + "." + key + " must be finite");
  return d;
}

int64_t Integer(const Napi::Object& o, const char* key, const std::string& where, int64_t min = INT64_MIN) {
  double d = Number(o, key, where);
  if (d != std::floor(d) || std::fabs(d) > 9007199254740991.0) Fail(o.Env(), where + "." + key + " must be an integer");
  if (d < static_cast<double>(min)) Fail(o.Env(), where + "." + key + " must be at least " + std::to_string(min));
  return static_cast<int64_t>(d);
}

bool Bool(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) Fail(o.Env(), where + "." + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string String(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) Fail(o.Env(), where + "." + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

bool Present(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

// An Int32Array (copied) or an array of integers.
std::vector<int32_t> Int32s(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  const std::string name = where + "." + key;
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_int32_array) Fail(o.Env(), name + " must be an Int32Array");
    auto arr = v.As<Napi::Int32Array>();
    return std::vector<int32_t>(arr.Data(), arr.Data() + arr.ElementLength());
  }
  if (!v.IsArray()) Fail(o.Env(), name + " must be an Int32Array");
  auto arr = v.As<Napi::Array>();
  std::vector<int32_t> out(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d == std::floor(d)) || d < INT32_MIN || d > INT32_MAX) Fail(o.Env(), name + " must hold 32-bit integers");
    out[i] = static_cast<int32_t>(d);
  }
  return out;
}

ModelConfig ParseModelConfig(const Napi::Value& value) {
  const std::string w = "options.config";
  Napi::Object o = AsObject(value, w);
  ModelConfig c;
  c.architecture = String(o, "architecture", w);
  c.hidden_size = Integer(o, "hiddenSize", w, 1);
  c.intermediate_size = Integer(o, "intermediateSize", w, 1);
  c.num_layers = Integer(o, "numLayers", w, 1);
  c.num_heads = Integer(o, "numHeads", w, 1);
  c.num_kv_heads = Integer(o, "numKvHeads", w, 1);
  c.head_dim = Integer(o, "headDim", w, 1);
  c.vocab_size = Integer(o, "vocabSize", w, 1);
  c.max_position_embeddings = Integer(o, "maxPositionEmbeddings", w, 1);
  c.rms_norm_eps = Number(o, "rmsNormEps", w);
  c.tie_word_embeddings = Bool(o, "tieWordEmbeddings", w);
  c.attention_bias = Bool(o, "attentionBias", w);
  c.sliding_window = Present(o, "slidingWindow") ? Integer(o, "slidingWindow", w, 0) : 0;
  const std::string rw = w + ".rope";
  Napi::Object r = AsObject(o.Get("rope"), rw);
  c.rope.theta = Number(r, "theta", rw);
  std::string scaling = String(r, "scaling", rw);
  if (scaling == "none") c.rope.scaling = RopeScaling::kNone;
  else if (scaling == "linear") c.rope.scaling = RopeScaling::kLinear;
  else if (scaling == "dynamic") c.rope.scaling = RopeScaling::kDynamic;
  else if (scaling == "llama3") c.rope.scaling = RopeScaling::kLlama3;
  else Fail(value.Env(), rw + ".scaling must be \"none\", \"linear\", \"dynamic\" or \"llama3\"");
  c.rope.factor = Number(r, "factor", rw);
  c.rope.low_freq_factor = Number(r, "lowFreqFactor", rw);
  c.rope.high_freq_factor = Number(r, "highFreqFactor", rw);
  c.rope.original_max_position_embeddings = Integer(r, "originalMaxPositionEmbeddings", rw, 1);
  return c;
}

SamplingParams ParseSamplingParams(const Napi::Value& value, const std::string& w) {
  Napi::Object o = AsObject(value, w);
  SamplingParams p;
  p.temperature = static_cast<float>(Number(o, "temperature", w));
  p.top_k = static_cast<int32_t>(Integer(o, "topK", w, 0));
  p.top_p = static_cast<float>(Number(o, "topP", w));
  p.typical_p = static_cast<float>(Number(o, "typicalP", w));
  p.do_sample = Bool(o, "doSample", w);
  p.seed = static_cast<uint64_t>(Integer(o, "seed", w, 0));
  p.repetition_penalty = static_cast<float>(Number(o, "repetitionPenalty", w));
  p.frequency_penalty = static_cast<float>(Number(o, "frequencyPenalty", w));
  // Optional: callers that predate it (and TGI-only tests) leave it out.
  if (Present(o, "presencePenalty")) p.presence_penalty = static_cast<float>(Number(o, "presencePenalty", w));
  if (Present(o, "watermark")) p.watermark = Bool(o, "watermark", w);
  if (Present(o, "watermarkGamma")) {
    const double gamma = Number(o, "watermarkGamma", w);
    if (!(gamma > 0.0 && gamma < 1.0)) Fail(o.Env(), w + ".watermarkGamma must be in (0, 1)");
    p.watermark_gamma = static_cast<float>(gamma);
  }
  if (Present(o, "watermarkDelta")) {
    const double delta = Number(o, "watermarkDelta", w);
    if (delta < 0.0) Fail(o.Env(), w + ".watermarkDelta must be >= 0");
    p.watermark_delta = static_cast<float>(delta);
  }
  return p;
}

}  // namespace

EngineOptions ParseEngineOptions(const Napi::Value& value) {
  const std::string w = "options";
  Napi::Object o = AsObject(value, w);
  EngineOptions e;
  e.model_dir = String(o, "modelDir", w);
  e.config = ParseModelConfig(o.Get("config"));
  e.dtype = String(o, "dtype", w);
  if (e.dtype != "float32" && e.dtype != "bfloat16" && e.dtype != "float16") {
    Fail(value.Env(), "options.dtype must be \"float32\", \"bfloat16\" or \"float16\"");
  }
  e.device = String(o, "device", w);
  if (e.device != "cpu" && e.device != "cuda") Fail(value.Env(), "options.device must be \"cpu\" or \"cuda\"");
  e.rank = static_cast<int>(Integer(o, "rank", w, 0));
  e.world_size = static_cast<int>(Integer(o, "worldSize", w, 1));
  if (e.rank >= e.world_size) Fail(value.Env(), "options.rank must be below options.worldSize");
  if (Present(o, "commName")) e.comm_name = String(o, "commName", w);
  if (Present(o, "ncclId")) {
    Napi::Value id = o.Get("ncclId");
    if (!id.IsBuffer()) Fail(value.Env(), "options.ncclId must be a Buffer (from ncclUniqueId())");
    auto bytes = id.As<Napi::Buffer<char>>();
    if (bytes.Length() != 128) {
      Fail(value.Env(), "options.ncclId must hold the 128 bytes of an ncclUniqueId, got " + std::to_string(bytes.Length()));
    }
    e.nccl_id.assign(bytes.Data(), bytes.Length());
  }
  if (Present(o, "commTimeoutMs")) e.comm_timeout_ms = static_cast<int>(Integer(o, "commTimeoutMs", w, 0));
  e.block_size = Integer(o, "blockSize", w, 1);
  if (Present(o, "threads")) e.threads = static_cast<int>(Integer(o, "threads", w, 0));
  if (Present(o, "cudaGraphs")) {
    e.cuda_graphs = Int32s(o, "cudaGraphs", w);
    for (int32_t b : *e.cuda_graphs) {
      if (b < 1 || b > 4096) Fail(value.Env(), "options.cudaGraphs must hold batch sizes from 1 to 4096");
    }
  }
  return e;
}

std::vector<StepInput> ParseStepInputs(const Napi::Value& value) {
  if (!value.IsArray()) Fail(value.Env(), "step() takes an array of sequences");
  auto arr = value.As<Napi::Array>();
  std::vector<StepInput> inputs(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string w = "sequences[" + std::to_string(i) + "]";
    Napi::Object o = AsObject(arr.Get(i), w);
    StepInput& in = inputs[i];
    in.id = Integer(o, "id", w);
    in.tokens = Int32s(o, "tokens", w);
    in.position = Integer(o, "position", w, 0);
    in.blocks = Int32s(o, "blocks", w);
    in.sample = Bool(o, "sample", w);
    in.top_n = static_cast<int32_t>(Integer(o, "topN", w, 0));
    in.prompt_logprobs = Bool(o, "promptLogprobs", w);
    if (Present(o, "init")) {
      Napi::Object init = AsObject(o.Get("init"), w + ".init");
      StepInit si;
      si.params = ParseSamplingParams(init.Get("params"), w + ".init.params");
      if (Present(init, "prefix")) si.prefix = Int32s(init, "prefix", w + ".init");
      in.init = std::move(si);
    }
  }
  return inputs;
}

std::vector<int64_t> ParseIds(const Napi::Value& value) {
  if (!value.IsArray()) Fail(value.Env(), "release() takes an array of sequence ids");
  auto arr = value.As<Napi::Array>();
  std::vector<int64_t> ids(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d == std::floor(d)) || std::fabs(d) > 9007199254740991.0) Fail(value.Env(), "release() ids must be safe integers");
    ids[i] = static_cast<int64_t>(d);
  }
  return ids;
}

Napi::Array StepResultsToJs(Napi::Env env, const std::vector<StepResult>& results) {
  Napi::Array out = Napi::Array::New(env, results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    const StepResult& r = results[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, static_cast<double>(r.id)));
    if (r.sampled) {
      o.Set("token", Napi::Number::New(env, r.token));
      o.Set("logprob", Napi::Number::New(env, r.logprob));
      if (!r.top_ids.empty()) {
        auto ids = Napi::Int32Array::New(env, r.top_ids.size());
        auto lps = Napi::Float32Array::New(env, r.top_logprobs.size());
        std::copy(r.top_ids.begin(), r.top_ids.end(), ids.Data());
        std::copy(r.top_logprobs.begin(), r.top_logprobs.end(), lps.Data());
        o.Set("topIds", ids);
        o.Set("topLogprobs", lps);
      }
    }
    if (r.has_prompt_logprobs) {
      auto lps = Napi::Float32Array::New(env, r.prompt_logprobs.size());
      std::copy(r.prompt_logprobs.begin(), r.prompt_logprobs.end(), lps.Data());
      o.Set("promptLogprobs", lps);
    }
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Object EngineInfoToJs(Napi::Env env, const EngineInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", info.device);
  o.Set("dtype", info.dtype);
  o.Set("attentionImpl", info.attention_impl);
  o.Set("blockSize", Napi::Number::New(env, static_cast<double>(info.block_size)));
  o.Set("kvBytesPerBlock", Napi::Number::New(env, static_cast<double>(info.kv_bytes_per_block)));
  o.Set("weightBytes", Napi::Number::New(env, static_cast<double>(info.weight_bytes)));
  o.Set("numBlocks", Napi::Number::New(env, static_cast<double>(info.num_blocks)));
  Napi::Array sizes = Napi::Array::New(env, info.warmup_batch_sizes.size());
  for (size_t i = 0; i < info.warmup_batch_sizes.size(); ++i) {
    sizes.Set(static_cast<uint32_t>(i), info.warmup_batch_sizes[i]);
  }
  o.Set("warmupBatchSizes", sizes);
  return o;
}

}  // namespace addon
}  // namespace tg
