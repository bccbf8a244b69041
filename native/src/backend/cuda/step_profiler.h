// StepProfiler: where a forward's GPU time goes, op by op, inside the decode CUDA graphs
// too (the GPU machines have no nsys). TEXT_GEN_STEP_PROFILE=N turns it on: the forward
// records an event after each op (captured into a graph as event-record nodes, so every
// replay re-records them), and after every N steps of one kind (a graph bucket, eager
// decode, or a step with prefill rows) the mean time of each op per step goes to stderr.
//
// An op's time is from the end of the op before it to its own end: its kernels, the gap
// before them, and the event node's own small cost. Off (the default), every call is a
// no-op and no event exists.
//
// TEXT_GEN_STEP_SKIP=op,op,... (measurement only: the tokens are garbage) leaves those ops
// out of the forward, so a timed step shows what each costs where it sits, with
// Programmatic Dependent Launch and graph replay as they really run, which the event nodes
// above disturb. The ops: add_rms_norm (TP 1's norms, or at TP > 1 the fused all-reduce
// and norm), all_reduce (TP > 1: the norm without its all-reduce), rope_kv_write, attention.
//
// Each report also splits the whole step (from its input copy to its last copy back)
// between the GPU and the host: how long the GPU worked on it, how long it sat idle
// before it (the host preparing it, the caller turning the last step's tokens around),
// and how long the host spent in the step and waiting for it.
// TEXT_GEN_STEP_PROFILE_OPS=0 keeps only that split (no event between ops, so the step
// runs as it does unprofiled).
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <vector>

namespace tg {
namespace cuda {

class StepProfiler {
 public:
  // Reads TEXT_GEN_STEP_PROFILE; `name` prefixes the report (e.g. the rank).
  explicit StepProfiler(std::string name);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  bool enabled() const { return every_ > 0; }
  // Whether TEXT_GEN_STEP_SKIP names any op.
  bool SkipsAny() const { return !skip_.empty(); }
  // Whether TEXT_GEN_STEP_SKIP names `op`.
  bool Skips(const char* op) const {
    return !skip_.empty() && skip_.find("," + std::string(op) + ",") != std::string::npos;
  }
  // The kind of a step: a graph bucket (> 0), kEagerDecode or kPrefill.
  static constexpr int kEagerDecode = 0, kPrefill = -1;

  // Starts recording the ops of a step of kind `kind` on `stream` (an eager step, or the
  // capture of the graph that later replays them): the kind's earlier events are dropped.
  void BeginRecording(int kind, cudaStream_t stream);
  // The op that has just been enqueued on `stream` ends here.
  void Mark(cudaStream_t stream, const char* op);
  // The whole step: EnterStep when the host starts preparing it; StepBegin and StepEnd
  // on `stream`, outside any graph, before its input copy and after its last copy back
  // (StepEnd also notes the host's clock before it waits). StepBegin returns the step's
  // mark, which StepEnd and Collect take: up to kStepsInFlight steps may be between
  // StepBegin and Collect at once (steps run ahead), and they are collected in order.
  static constexpr int kStepsInFlight = 3;
  void EnterStep();
  int StepBegin(cudaStream_t stream);
  void StepEnd(int step, cudaStream_t stream);
  // After the step `step` (StepBegin's mark; -1: none) of kind `kind` is done: adds its
  // op times, and prints and resets the kind's totals every N steps.
  void Collect(int kind, int step);

 private:
  struct Timeline {
    cudaEvent_t start = nullptr;
    std::vector<std::pair<std::string, cudaEvent_t>> marks;
    std::map<std::string, std::pair<double, int>> total_ms_and_calls;  // summed over steps
    int steps = 0;
    // Summed over steps: the GPU's time on the step and idle before it; the host's in
    // the step (entry to return) and in its final wait.
    double gpu_busy_ms = 0, gpu_idle_ms = 0, host_ms = 0, host_wait_ms = 0;
    int idle_steps = 0;  // steps with an earlier step to measure the idle time from
  };
  void Report(int kind, Timeline& t);
  cudaEvent_t NewEvent();
  void Record(cudaEvent_t event, cudaStream_t stream);
  static void DropEvents(Timeline& t);

  std::string name_;
  int every_ = 0;
  bool op_marks_ = true;  // TEXT_GEN_STEP_PROFILE_OPS unset or not 0
  // The bounds of the last steps, a ring one longer than the steps in flight, so that
  // the step collected before is still there to measure the GPU's idle time from.
  struct StepBounds {
    cudaEvent_t begin = nullptr, end = nullptr;
    double host_begin_ms = 0, host_wait_from_ms = 0;
  };
  StepBounds bounds_[kStepsInFlight + 1];
  int next_bounds_ = 0;
  int last_collected_ = -1;  // the ring entry of the step collected last
  double host_entry_ms_ = 0;
  std::string skip_;  // ",op,op,"
  std::map<int, Timeline> timelines_;
  Timeline* recording_ = nullptr;
};

}  // namespace cuda
}  // namespace tg
