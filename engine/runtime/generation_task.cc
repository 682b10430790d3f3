#include "engine/runtime/generation_task.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <set>

namespace blip2::engine {

GenerationTask::GenerationTask(int64_t id, GenerationParams params, DecoderInput first_step,
                               const Tokenizer& tokenizer, TokenSink on_token,
                               TextPieceSink on_text)
    : id_(id),
      params_(std::move(params)),
      first_step_(std::move(first_step)),
      tokenizer_(tokenizer),
      on_token_(std::move(on_token)) {
  if (params_.num_beams > 1) {
    beams_.emplace(params_, first_step_.token_ids);
    beam_seqs_.assign(static_cast<size_t>(params_.num_beams), id_);
    return;
  }
  if (params_.do_sample) rng_ = at::detail::createCPUGenerator(params_.seed);
  const int64_t n = params_.do_sample ? params_.num_return_sequences : 1;
  samples_.resize(static_cast<size_t>(n));
  for (size_t s = 0; s < samples_.size(); ++s) {
    samples_[s].history = first_step_.token_ids;
    // Only a single sequence streams its text; stop strings are watched in every one.
    samples_[s].streamer = std::make_unique<TextStreamer>(tokenizer_, params_.stop_strings,
                                                          n == 1 ? on_text : TextPieceSink());
  }
  samples_[0].seq = id_;
  if (n > 1) on_token_ = nullptr;
}

int64_t GenerationTask::width() const {
  return beams_ ? params_.num_beams : static_cast<int64_t>(samples_.size());
}

bool GenerationTask::IsEos(int64_t token) const {
  return std::find(params_.eos_token_ids.begin(), params_.eos_token_ids.end(), token) != params_.eos_token_ids.end();
}

const std::vector<int64_t>& GenerationTask::Generated(SequenceId seq) const {
  if (beams_) {
    for (size_t b = 0; b < beam_seqs_.size(); ++b) {
      if (beam_seqs_[b] == seq) return beams_->running(static_cast<int64_t>(b));
    }
  } else {
    for (const Sample& s : samples_) {
      if (s.seq == seq && !s.released) return s.generated;
    }
  }
  static const std::vector<int64_t> kNone;
  return kNone;
}

void GenerationTask::AppendSampleRows(const StepRows& step, std::vector<SampleRow>* rows) {
  pending_rows_.clear();
  // Before the first fork every sample reads the first sequence's row.
  for (size_t s = 0; s < samples_.size(); ++s) {
    Sample& sample = samples_[s];
    if (sample.done) continue;
    const int64_t row = step.RowOf(sample.seq >= 0 ? sample.seq : id_);
    if (row < 0) continue;
    RowContext context{&params_, &sample.history, static_cast<int64_t>(sample.generated.size())};
    rows->push_back({row, context, rng_ ? &*rng_ : nullptr});
    pending_rows_.push_back(s);
  }
}

void GenerationTask::TakeTokens(const int64_t* tokens, const TokenLogprob* logprobs) {
  const bool with_logprobs = params_.logprobs >= 0 && logprobs != nullptr;
  for (size_t i = 0; i < pending_rows_.size(); ++i) {
    Sample& s = samples_[pending_rows_[i]];
    const int64_t token = tokens[i];
    s.generated.push_back(token);
    s.history.push_back(token);
    if (with_logprobs) s.logprobs.push_back(logprobs[i]);
    if (pending_rows_[i] == 0) produced_any_ = true;
    if (on_token_) on_token_(token, with_logprobs ? &logprobs[i] : nullptr);
    if (IsEos(token)) {
      s.done = true;
      s.reason = FinishReason::kEos;
    } else if (s.streamer->Push(token)) {
      s.done = true;
      s.reason = FinishReason::kStopString;
    } else if (static_cast<int64_t>(s.generated.size()) >= params_.max_new_tokens) {
      s.done = true;
      s.reason = FinishReason::kLength;
    }
  }
  pending_rows_.clear();
}

void GenerationTask::BeamStep(const at::Tensor& logits, const StepRows& step) {
  std::vector<int64_t> rows;
  for (SequenceId seq : beam_seqs_) rows.push_back(step.RowOf(seq));
  const at::Tensor beam_logits = logits.index_select(0, at::tensor(rows, at::kLong).to(logits.device()));
  beam_next_ = beams_->Step(beam_logits);
  beams_done_ = !beam_next_.has_value();
  produced_any_ = true;
}

bool GenerationTask::Reconcile(scheduler::Scheduler& scheduler, const std::function<SequenceId()>& new_id) {
  if (beams_) {
    if (beams_done_) return true;
    if (!beam_next_) return false;  // not in this step
    // New beam b continues beam sources[b]: the first to continue a sequence
    // takes it over, the others fork it; sequences nobody continues are freed.
    std::vector<SequenceId> next(beam_seqs_.size());
    std::set<SequenceId> continued;
    for (size_t b = 0; b < next.size(); ++b) continued.insert(beam_seqs_[beam_next_->sources[b]]);
    for (SequenceId seq : std::set<SequenceId>(beam_seqs_.begin(), beam_seqs_.end())) {
      if (continued.count(seq) == 0) scheduler.Free(seq);
    }
    std::set<SequenceId> taken;
    for (size_t b = 0; b < next.size(); ++b) {
      const SequenceId source = beam_seqs_[beam_next_->sources[b]];
      if (taken.insert(source).second) {
        next[b] = source;
      } else {
        next[b] = new_id();
        if (!scheduler.Fork(source, next[b])) return true;  // the request left the scheduler meanwhile
      }
    }
    beam_seqs_ = std::move(next);
    beam_next_.reset();
    return false;
  }
  // Samples: fork the first sequence for every other live sample once it has
  // its first token; free the sequences of finished samples.
  for (size_t s = 1; s < samples_.size(); ++s) {
    Sample& sample = samples_[s];
    if (sample.seq >= 0 || sample.done || sample.generated.empty()) continue;
    sample.seq = new_id();
    if (!scheduler.Fork(id_, sample.seq)) return true;
  }
  bool all_done = true;
  for (Sample& sample : samples_) {
    all_done = all_done && sample.done;
    if (sample.done && !sample.released && sample.seq >= 0) {
      scheduler.Free(sample.seq);
      sample.released = true;
    }
  }
  return all_done;
}

CaptionResult GenerationTask::Finished(std::vector<Hypothesis> hyps) const {
  CaptionResult result;
  result.prompt_tokens = static_cast<int64_t>(first_step_.token_ids.size());
  for (const Hypothesis& h : hyps) {
    GeneratedSequence seq;
    seq.token_ids = h.tokens;
    seq.finish_reason = h.reason;
    seq.text = FinalText(tokenizer_, h.tokens, h.reason == FinishReason::kEos, params_.stop_strings).value_or("");
    result.sequences.push_back(std::move(seq));
  }
  return result;
}

CaptionResult GenerationTask::Result(bool cancelled) const {
  std::vector<Hypothesis> hyps;
  if (beams_) {
    if (cancelled) {  // the best running beams as far as they got
      for (int64_t b = 0; b < std::min(params_.num_return_sequences, params_.num_beams); ++b) {
        hyps.push_back({beams_->running(b), FinishReason::kCancelled, 0});
      }
    } else {
      hyps = beams_->Results();
    }
  } else {
    for (const Sample& s : samples_) hyps.push_back({s.generated, cancelled && !s.done ? FinishReason::kCancelled : s.reason, 0});
  }
  CaptionResult result = Finished(std::move(hyps));
  if (!beams_) {
    for (size_t s = 0; s < samples_.size(); ++s) result.sequences[s].logprobs = samples_[s].logprobs;
  }
  return result;
}

void GenerationTask::FlushText() {
  if (samples_.size() == 1) samples_[0].streamer->Finish();
}

}  // namespace blip2::engine
