// See step_profiler.h.
#include "backend/cuda/step_profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/stream_capture.h"

namespace tg {
namespace cuda {
namespace {

double HostMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

StepProfiler::StepProfiler(std::string name) : name_(std::move(name)) {
  if (const char* env = std::getenv("TEXT_GEN_STEP_PROFILE")) every_ = std::max(0, std::atoi(env));
  op_marks_ = SwitchedOn("TEXT_GEN_STEP_PROFILE_OPS");
  if (const char* env = std::getenv("TEXT_GEN_STEP_SKIP")) {
    skip_ = std::string(",") + env + ",";
    std::fprintf(stderr, "text-gen %s: TEXT_GEN_STEP_SKIP=%s leaves those ops out: outputs are wrong\n", name_.c_str(), env);
  }
}

StepProfiler::~StepProfiler() {
  for (auto& [kind, t] : timelines_) DropEvents(t);
  for (StepBounds& b : bounds_) {
    if (b.begin) cudaEventDestroy(b.begin);
    if (b.end) cudaEventDestroy(b.end);
  }
}

void StepProfiler::DropEvents(Timeline& t) {
  if (t.start) cudaEventDestroy(t.start);
  for (auto& [op, event] : t.marks) cudaEventDestroy(event);
  t.start = nullptr;
  t.marks.clear();
}

cudaEvent_t StepProfiler::NewEvent() {
  cudaEvent_t event = nullptr;
  TG_CUDA_CHECK(cudaEventCreate(&event));
  return event;
}

void StepProfiler::Record(cudaEvent_t event, cudaStream_t stream) {
  // In a capture, an external event becomes an event-record node that each replay runs.
  TG_CUDA_CHECK(
      cudaEventRecordWithFlags(event, stream, IsCapturing(stream) ? cudaEventRecordExternal : cudaEventRecordDefault));
}

void StepProfiler::BeginRecording(int kind, cudaStream_t stream) {
  if (!enabled()) return;
  recording_ = &timelines_[kind];
  DropEvents(*recording_);
  // A graph's capture restarts its kind's totals, so that they are its replays' alone; an
  // eager step (a prefill, or a decode past the graphs) records anew every step, and its
  // kind's totals add up until they are reported.
  if (IsCapturing(stream)) {
    recording_->total_ms_and_calls.clear();
    recording_->steps = 0;
  }
  recording_->start = NewEvent();
  Record(recording_->start, stream);
}

void StepProfiler::Mark(cudaStream_t stream, const char* op) {
  if (!enabled() || !recording_ || !op_marks_) return;
  cudaEvent_t event = NewEvent();
  recording_->marks.emplace_back(op, event);
  Record(event, stream);
}

void StepProfiler::EnterStep() {
  if (enabled()) host_entry_ms_ = HostMs();
}

int StepProfiler::StepBegin(cudaStream_t stream) {
  if (!enabled()) return -1;
  const int step = next_bounds_;
  next_bounds_ = (next_bounds_ + 1) % (kStepsInFlight + 1);
  StepBounds& b = bounds_[step];
  if (!b.begin) {
    b.begin = NewEvent();
    b.end = NewEvent();
  }
  b.host_begin_ms = host_entry_ms_;
  TG_CUDA_CHECK(cudaEventRecord(b.begin, stream));
  return step;
}

void StepProfiler::StepEnd(int step, cudaStream_t stream) {
  if (step < 0) return;
  TG_CUDA_CHECK(cudaEventRecord(bounds_[step].end, stream));
  bounds_[step].host_wait_from_ms = HostMs();
}

void StepProfiler::Collect(int kind, int step) {
  if (!enabled()) return;
  recording_ = nullptr;
  Timeline& t = timelines_[kind];
  if (step >= 0) {
    const StepBounds& b = bounds_[step];
    const double now = HostMs();
    t.host_ms += now - b.host_begin_ms;
    t.host_wait_ms += now - b.host_wait_from_ms;
    float ms = 0.0f;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, b.begin, b.end));
    t.gpu_busy_ms += ms;
    if (last_collected_ >= 0) {
      // Negative when this step began before the last one ended (another stream's).
      TG_CUDA_CHECK(cudaEventElapsedTime(&ms, bounds_[last_collected_].end, b.begin));
      t.gpu_idle_ms += ms;
      ++t.idle_steps;
    }
    last_collected_ = step;
  }
  // A replay of the same graph run ahead records the graph's event nodes again before this one
  // is collected: the times read are then that later replay's (the same ops), once it has run.
  if (!t.marks.empty()) TG_CUDA_CHECK(cudaEventSynchronize(t.marks.back().second));
  cudaEvent_t before = t.start;
  for (auto& [op, event] : t.marks) {
    float ms = 0.0f;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, before, event));  // marks exist only after a start
    auto& [total, calls] = t.total_ms_and_calls[op];
    total += ms;
    ++calls;
    before = event;
  }
  if (++t.steps >= every_) Report(kind, t);
}

void StepProfiler::Report(int kind, Timeline& t) {
  const std::string what = kind > 0 ? "decode graph, bucket " + std::to_string(kind)
                                    : kind == kEagerDecode ? std::string("eager decode") : std::string("with prefill");
  std::vector<std::pair<double, std::string>> rows;
  double step_ms = 0.0;
  for (auto& [op, tc] : t.total_ms_and_calls) {
    rows.emplace_back(tc.first / t.steps, op);
    step_ms += tc.first / t.steps;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::fprintf(stderr, "text-gen step profile %s (%s, %d steps): %.3f ms per step between the first and last op\n",
               name_.c_str(), what.c_str(), t.steps, step_ms);
  std::fprintf(stderr,
               "text-gen step profile %s   whole step: GPU busy %.3f ms, GPU idle before it %.3f ms; host in the step "
               "%.3f ms, %.3f of them waiting for the GPU\n",
               name_.c_str(), t.gpu_busy_ms / t.steps, t.idle_steps > 0 ? t.gpu_idle_ms / t.idle_steps : 0.0,
               t.host_ms / t.steps, t.host_wait_ms / t.steps);
  for (auto& [ms, op] : rows) {
    const auto& tc = t.total_ms_and_calls[op];
    const double calls = static_cast<double>(tc.second) / t.steps;
    std::fprintf(stderr, "text-gen step profile %s   %-18s %8.1f us/step %5.1f%%  %4.0f calls  %7.2f us/call\n",
                 name_.c_str(), op.c_str(), ms * 1e3, step_ms > 0 ? 100.0 * ms / step_ms : 0.0, calls,
                 calls > 0 ? ms * 1e3 / calls : 0.0);
  }
  t.total_ms_and_calls.clear();
  t.steps = 0;
  t.gpu_busy_ms = t.gpu_idle_ms = t.host_ms = t.host_wait_ms = 0;
  t.idle_steps = 0;
}

}  // namespace cuda
}  // namespace tg
