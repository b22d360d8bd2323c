// hearth's bridge to llama.cpp's multi-token-prediction (MTP, "NextN") layers: a second
// context of the target model (LLAMA_CONTEXT_TYPE_MTP) runs the model's MTP block, which
// guesses the token after next from the target's last hidden state and the next token.
//
// The protocol is the one llama.cpp's own MTP drafter follows (common/speculative.cpp), for
// any number of sequences and with a draft length per call:
//   - every batch the target decodes is decoded by the MTP context too (`process`): token x_p
//     paired with the target's hidden state h_{p-1} (the previous row of the same sequence,
//     or the last one kept from an earlier batch), which fills the MTP block's KV cache;
//   - a draft (`draft`) starts from the sequence's next token and the hidden state of the
//     token before it, then feeds each drafted token with the MTP block's own output state;
//     the cells it wrote are dropped again before the target verifies the draft;
//   - after verification (`accept`), the hidden state carried on is the last confirmed
//     token's.
// The tokens of one sequence must be contiguous in a batch.

#include "common.h"
#include "llama-ext.h"
#include "llama.h"

#include <cmath>
#include <cstring>
#include <vector>

struct hearth_mtp {
    llama_context * tgt = nullptr;
    llama_context * dft = nullptr;
    int32_t n_embd = 0;
    int32_t n_vocab = 0;
    common_batch batch;
    // Per sequence: the hidden state the next processed token pairs with.
    std::vector<std::vector<float>> pending;
    // Per sequence: the hidden states of its rows in the latest target batch.
    std::vector<std::vector<float>> rows;
    std::vector<int32_t> n_rows;
    std::vector<float> h;
};

extern "C" hearth_mtp * hearth_mtp_new(llama_context * tgt, llama_context * dft, int32_t n_seq) {
    try {
        auto * m = new hearth_mtp();
        m->tgt = tgt;
        m->dft = dft;
        m->n_embd = llama_model_n_embd_out(llama_get_model(dft));
        if (m->n_embd != llama_model_n_embd_out(llama_get_model(tgt)) || n_seq <= 0) {
            delete m;
            return nullptr;
        }
        m->n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(dft)));
        m->batch = common_batch(dft);
        m->pending.assign(n_seq, std::vector<float>(m->n_embd, 0.0f));
        m->rows.assign(n_seq, {});
        m->n_rows.assign(n_seq, 0);
        m->h.assign(m->n_embd, 0.0f);
        // The target keeps the hidden state of every row, the MTP context of its outputs.
        llama_set_embeddings_nextn(tgt, true, false);
        llama_set_embeddings_nextn(dft, true, true);
        return m;
    } catch (...) {
        return nullptr;
    }
}

extern "C" void hearth_mtp_free(hearth_mtp * m) {
    delete m;
}

// A sequence starts over (its cache was emptied): nothing to pair its first token with.
extern "C" void hearth_mtp_reset(hearth_mtp * m, int32_t seq) {
    if (m && seq >= 0 && seq < (int32_t) m->pending.size()) {
        std::fill(m->pending[seq].begin(), m->pending[seq].end(), 0.0f);
        m->n_rows[seq] = 0;
    }
}

// After the target decoded a batch: `n` of its tokens (whole sequences, in the batch's order;
// `rows[k]` is the batch index of entry k) through the MTP block. Returns llama_process's
// status (0: done).
extern "C" int32_t hearth_mtp_process(hearth_mtp * m, const llama_token * tokens, const llama_pos * pos, const llama_seq_id * seq, const int32_t * rows, int32_t n) {
    if (!m || n <= 0) {
        return 0;
    }
    try {
        const float * h_tgt = llama_get_embeddings_nextn(m->tgt);
        if (!h_tgt) {
            return -1;
        }
        const size_t row = (size_t) m->n_embd;
        m->batch.clear();
        for (int32_t k = 0; k < n; ++k) {
            const int32_t s = seq[k];
            if (s < 0 || s >= (int32_t) m->pending.size()) {
                return -1;
            }
            const bool first = k == 0 || seq[k - 1] != s;
            const int32_t idx = m->batch.add(tokens[k], pos[k], s, false);
            const float * h = first ? m->pending[s].data() : h_tgt + (size_t) (rows[k] - 1) * row;
            m->batch.set_embd(idx, {h, 1, row});
        }
        const int32_t rc = llama_process(m->dft, LLAMA_PROCESS_TYPE_DECODE, m->batch.get());
        if (rc != 0) {
            return rc;
        }
        for (int32_t k = 0; k < n;) {
            const int32_t s = seq[k];
            int32_t e = k;
            while (e < n && seq[e] == s) {
                ++e;
            }
            m->rows[s].assign(h_tgt + (size_t) rows[k] * row, h_tgt + (size_t) (rows[e - 1] + 1) * row);
            m->n_rows[s] = e - k;
            std::memcpy(m->pending[s].data(), h_tgt + (size_t) rows[e - 1] * row, row * sizeof(float));
            k = e;
        }
        return 0;
    } catch (...) {
        return -1;
    }
}

// Up to `want` tokens after `id_last` (at position `pos0` of sequence `seq`, not decoded
// yet), greedily, stopping before a token the MTP block gives less than `p_min`. Returns how
// many were written to `out`, or -1 on failure. The cells it writes are dropped again.
extern "C" int32_t hearth_mtp_draft(hearth_mtp * m, int32_t seq, llama_pos pos0, llama_token id_last, int32_t want, float p_min, llama_token * out) {
    if (!m || seq < 0 || seq >= (int32_t) m->pending.size() || want <= 0) {
        return 0;
    }
    int32_t n = 0;
    try {
        const size_t row = (size_t) m->n_embd;
        std::memcpy(m->h.data(), m->pending[seq].data(), row * sizeof(float));
        llama_token tok = id_last;
        for (int32_t i = 0; i < want; ++i) {
            m->batch.clear();
            const int32_t idx = m->batch.add(tok, pos0 + i, seq, true);
            m->batch.set_embd(idx, {m->h.data(), 1, row});
            if (llama_process(m->dft, LLAMA_PROCESS_TYPE_DECODE, m->batch.get()) != 0) {
                break;
            }
            const float * logits = llama_get_logits_ith(m->dft, idx);
            const float * h = llama_get_embeddings_nextn_ith(m->dft, idx);
            if (!logits || !h) {
                break;
            }
            int32_t best = 0;
            for (int32_t t = 1; t < m->n_vocab; ++t) {
                if (logits[t] > logits[best]) {
                    best = t;
                }
            }
            double sum = 0.0;
            for (int32_t t = 0; t < m->n_vocab; ++t) {
                sum += std::exp((double) logits[t] - (double) logits[best]);
            }
            if (1.0 / sum < (double) p_min) {
                break;
            }
            out[n++] = best;
            tok = best;
            std::memcpy(m->h.data(), h, row * sizeof(float));
        }
    } catch (...) {
        n = n > 0 ? n : -1;
    }
    llama_memory_seq_rm(llama_get_memory(m->dft), seq, pos0, -1);
    return n;
}

// `n` drafted tokens of the latest batch were confirmed: the hidden state carried on is the
// last confirmed one's.
extern "C" void hearth_mtp_accept(hearth_mtp * m, int32_t seq, int32_t n) {
    if (!m || seq < 0 || seq >= (int32_t) m->pending.size() || m->n_rows[seq] <= 0) {
        return;
    }
    const int32_t i = n < m->n_rows[seq] - 1 ? n : m->n_rows[seq] - 1;
    const size_t row = (size_t) m->n_embd;
    std::memcpy(m->pending[seq].data(), m->rows[seq].data() + (size_t) i * row, row * sizeof(float));
}
