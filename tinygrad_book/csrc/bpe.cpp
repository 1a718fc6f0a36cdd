// Byte-level BPE: the training loop (incremental pair counts, a heap with lazy deletion, distinct chunks counted
// once) and the encoder (tiktoken's merge-by-rank inside each chunk), plus a pre-tokenizer for the GPT-2 and GPT-4
// (cl100k) split patterns written out by hand so that a whole encode runs here, without the GIL.
// The pure-Python reference of every piece is in tinygrad_book/bpe.py; the tests hold the two to the same output.
//
// Exposed as two TorchScript classes, torch.classes.tgb_bpe.Trainer and torch.classes.tgb_bpe.Encoder. Text comes
// in as a uint8 tensor of UTF-8 bytes (plus int64 offsets for a batch), token ids go out as int64 tensors. Calls
// from Python release the GIL, so Python threads calling into one Encoder run in parallel.
#include <torch/custom_class.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

// ---------------------------------------------------------------- pre-tokenization

enum Pattern : int64_t { kWhole = 0, kGpt2 = 1, kGpt4 = 2 };
enum CharClass : uint8_t { kLetter = 1, kNumber = 2, kSpace = 4 };  // \p{L}, \p{N}, \s (as the regex module has them)

// Decode one UTF-8 code point at s[i], of a text of n bytes; *len = its bytes. Python hands us valid UTF-8, but the
// class can be called with any bytes: a truncated or malformed sequence reads as one byte of U+FFFD, never past the
// end and never outside the class table.
inline uint32_t decode_utf8(const uint8_t* s, int64_t i, int64_t n, int* len) {
  const uint8_t c = s[i];
  *len = 1;
  if (c < 0x80) return c;
  const int k = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
  if (k == 0 || i + k > n) return 0xFFFD;
  uint32_t cp = c & (0x7F >> k);
  for (int j = 1; j < k; ++j) {
    if ((s[i + j] & 0xC0) != 0x80) return 0xFFFD;
    cp = (cp << 6) | (s[i + j] & 0x3F);
  }
  if (cp > 0x10FFFF) return 0xFFFD;
  *len = k;
  return cp;
}

// A cursor over the code points of a text: cp(i) and the next position, with the character class looked up.
struct Text {
  const uint8_t* s;
  int64_t n;
  const uint8_t* classes;  // 0x110000 entries of CharClass bits
  uint32_t cp(int64_t i, int64_t* next) const {
    int len;
    const uint32_t c = decode_utf8(s, i, n, &len);
    *next = i + len;
    return c;
  }
  uint8_t cls(uint32_t c) const { return classes[c]; }
};

inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

// Length in bytes of the maximal run starting at i whose characters all satisfy pred; *end gets its end.
template <typename Pred> inline int64_t run(const Text& t, int64_t i, Pred pred, int64_t* count = nullptr) {
  int64_t k = 0, j = i;
  while (j < t.n) {
    int64_t nx;
    const uint32_t c = t.cp(j, &nx);
    if (!pred(c)) break;
    j = nx; ++k;
  }
  if (count) *count = k;
  return j;
}

// The contraction alternative: ' followed by s d m t ll ve re (any case for GPT-4, where (?i) also lets U+017F,
// LATIN SMALL LETTER LONG S, match s). Returns the end of the match or -1.
inline int64_t match_contraction(const Text& t, int64_t i, bool icase) {
  if (t.s[i] != '\'' || i + 1 >= t.n) return -1;
  int64_t j1;
  uint32_t c1 = t.cp(i + 1, &j1);
  auto low = [&](uint32_t c) -> uint32_t {
    if (!icase) return c;
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';
    return c;
  };
  c1 = low(c1);
  if (c1 == 's' || c1 == 'd' || c1 == 'm' || c1 == 't') return j1;
  if (j1 >= t.n) return -1;
  int64_t j2;
  const uint32_t c2 = low(t.cp(j1, &j2));
  if ((c1 == 'l' && c2 == 'l') || (c1 == 'v' && c2 == 'e') || (c1 == 'r' && c2 == 'e')) return j2;
  return -1;
}

// The whitespace alternatives shared by both patterns, tried at i where cp(i) is whitespace:
//   \s++$ | (GPT-4 only: \s*[\r\n]) | \s+(?!\S) | \s
inline int64_t match_space(const Text& t, int64_t i, bool gpt4) {
  int64_t first_end;
  t.cp(i, &first_end);
  const int64_t e = run(t, i, [&](uint32_t c) { return (t.cls(c) & kSpace) != 0; });
  if (e == t.n) return e;  // \s++$
  if (gpt4) {              // \s*[\r\n]: up to and including the last \r or \n of the run
    int64_t last = -1;
    for (int64_t j = i, nx; j < e; j = nx) {
      const uint32_t c = t.cp(j, &nx);
      if (is_crlf(c)) last = nx;
    }
    if (last > 0) return last;
  }
  // \s+(?!\S): the run minus its last character, which stays to prefix the next word; at least one character
  int64_t last_start = i;
  for (int64_t j = i, nx; j < e; j = nx) { t.cp(j, &nx); if (nx == e) last_start = j; }
  if (last_start > i) return last_start;
  return first_end;  // \s
}

// End of the chunk starting at i, for GPT-2's pattern:
// '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
int64_t next_gpt2(const Text& t, int64_t i) {
  const int64_t c = match_contraction(t, i, false);
  if (c > 0) return c;
  int64_t j = i, nx;
  uint32_t cp = t.cp(j, &nx);
  if (cp == ' ' && nx < t.n) { j = nx; cp = t.cp(j, &nx); }  // the optional leading space
  const uint8_t k = t.cls(cp);
  if (k & kLetter) return run(t, j, [&](uint32_t c) { return (t.cls(c) & kLetter) != 0; });
  if (k & kNumber) return run(t, j, [&](uint32_t c) { return (t.cls(c) & kNumber) != 0; });
  if (!(k & kSpace)) return run(t, j, [&](uint32_t c) { return (t.cls(c) & (kLetter | kNumber | kSpace)) == 0; });
  return match_space(t, i, false);  // cp(j) is whitespace: cp(i) is too (j == i, or cp(i) was the space)
}

// End of the chunk starting at i, for GPT-4's (cl100k) pattern:
// '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
int64_t next_gpt4(const Text& t, int64_t i) {
  const int64_t c = match_contraction(t, i, true);
  if (c > 0) return c;
  int64_t nx;
  const uint32_t cp = t.cp(i, &nx);
  const uint8_t k = t.cls(cp);
  auto letters = [&](uint32_t c) { return (t.cls(c) & kLetter) != 0; };
  if (k & kLetter) return run(t, i, letters);
  if (!(k & kNumber) && !is_crlf(cp) && nx < t.n) {  // [^\r\n\p{L}\p{N}]?+ then \p{L}++
    int64_t nx2;
    if (t.cls(t.cp(nx, &nx2)) & kLetter) return run(t, nx, letters);
  }
  if (k & kNumber) {  // \p{N}{1,3}+
    int64_t j = i;
    for (int r = 0; r < 3 && j < t.n; ++r) {
      int64_t n2;
      if (!(t.cls(t.cp(j, &n2)) & kNumber)) break;
      j = n2;
    }
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
  int64_t j = i;
  uint32_t p = cp;
  int64_t pn = nx;
  if (cp == ' ' && nx < t.n) { j = nx; p = t.cp(j, &pn); }
  if (!(t.cls(p) & (kLetter | kNumber | kSpace))) {
    const int64_t e = run(t, j, [&](uint32_t c) { return (t.cls(c) & (kLetter | kNumber | kSpace)) == 0; });
    return run(t, e, [](uint32_t c) { return is_crlf(c); });
  }
  return match_space(t, i, true);
}

// Chunk boundaries of s[0:n] as (start, end) byte offsets, appended to out.
void split(const uint8_t* s, int64_t n, int64_t pattern, const uint8_t* classes, std::vector<std::pair<int64_t, int64_t>>& out) {
  if (n == 0) return;
  if (pattern == kWhole) { out.emplace_back(0, n); return; }
  Text t{s, n, classes};
  for (int64_t i = 0; i < n;) {
    const int64_t e = pattern == kGpt2 ? next_gpt2(t, i) : next_gpt4(t, i);
    out.emplace_back(i, e);
    i = e;
  }
}

// ---------------------------------------------------------------- a byte-string -> rank table

inline uint64_t hash_bytes(const uint8_t* p, int64_t n) {  // FNV-1a, 64-bit
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
  return h ^ (h >> 29);
}

// Open addressing over token byte strings kept in one buffer; read-only after construction, so threads share it.
struct RankTable {
  std::vector<uint8_t> bytes;
  std::vector<int64_t> start;            // token k is bytes[start[k]:start[k+1]]
  std::vector<int32_t> rank_of;          // rank of token k
  std::vector<int32_t> slots;            // -1 or a token index
  uint64_t mask = 0;
  int64_t max_len = 0;                   // the longest token: longer spans are never looked up

  void build(const uint8_t* b, const int64_t* offsets, const int64_t* ranks, int64_t n_tokens) {
    bytes.assign(b, b + offsets[n_tokens]);
    start.assign(offsets, offsets + n_tokens + 1);
    rank_of.assign(ranks, ranks + n_tokens);
    uint64_t cap = 16;
    while (cap < uint64_t(n_tokens) * 2) cap <<= 1;
    slots.assign(cap, -1);
    mask = cap - 1;
    for (int64_t k = 0; k < n_tokens; ++k) {
      max_len = std::max(max_len, start[k + 1] - start[k]);
      uint64_t h = hash_bytes(bytes.data() + start[k], start[k + 1] - start[k]) & mask;
      while (slots[h] >= 0) h = (h + 1) & mask;
      slots[h] = int32_t(k);
    }
  }
  // The rank of p[0:n], or -1.
  inline int32_t find(const uint8_t* p, int64_t n) const {
    if (n > max_len) return -1;
    uint64_t h = hash_bytes(p, n) & mask;
    while (true) {
      const int32_t k = slots[h];
      if (k < 0) return -1;
      if (start[k + 1] - start[k] == n && std::memcmp(bytes.data() + start[k], p, n) == 0) return rank_of[k];
      h = (h + 1) & mask;
    }
  }
};

// ---------------------------------------------------------------- byte-pair merge of one chunk

constexpr int32_t kNoRank = INT32_MAX;
constexpr int64_t kSmallPiece = 128;  // pieces up to this many bytes take the quadratic loop

// tiktoken's algorithm for short pieces: a vector of part starts with the rank of each part merged with the
// next; repeatedly merge the lowest rank (the leftmost on a tie). Quadratic, but the fastest for a few bytes.
void merge_small(const RankTable& rt, const uint8_t* p, int64_t n, std::vector<int64_t>& out) {
  struct Part { int64_t start; int32_t rank; };  // rank: of this part merged with the next one
  Part parts[kSmallPiece + 2];
  int64_t m = n + 1;  // n parts plus an end sentinel
  auto rank_at = [&](int64_t i) -> int32_t {  // parts i and i+1 merged
    if (i + 2 >= m) return kNoRank;
    const int32_t r = rt.find(p + parts[i].start, parts[i + 2].start - parts[i].start);
    return r < 0 ? kNoRank : r;
  };
  for (int64_t i = 0; i <= n; ++i) parts[i] = {i, kNoRank};
  for (int64_t i = 0; i + 2 <= n; ++i) parts[i].rank = rank_at(i);
  while (m > 2) {
    int32_t best = kNoRank;
    int64_t bi = -1;
    for (int64_t i = 0; i + 2 < m; ++i)
      if (parts[i].rank < best) { best = parts[i].rank; bi = i; }
    if (bi < 0) break;
    std::memmove(parts + bi + 1, parts + bi + 2, sizeof(Part) * (m - bi - 2));  // part bi absorbs part bi+1
    --m;
    parts[bi].rank = rank_at(bi);
    if (bi > 0) parts[bi - 1].rank = rank_at(bi - 1);
  }
  for (int64_t i = 0; i + 1 < m; ++i) out.push_back(rt.find(p + parts[i].start, parts[i + 1].start - parts[i].start));
}

// The same result for long pieces in O(n log n): a linked list of parts and a heap of candidate merges keyed by
// (rank, start); an entry is stale (skipped) when either of its two parts changed after it was pushed.
void merge_large(const RankTable& rt, const uint8_t* p, int64_t n, std::vector<int64_t>& out) {
  std::vector<int64_t> nxt(n), prv(n);
  std::vector<char> alive(n, 1);
  for (int64_t i = 0; i < n; ++i) { nxt[i] = i + 1; prv[i] = i - 1; }
  struct Cand { int32_t rank; int64_t i, end; };
  auto cmp = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.i > b.i; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(cmp)> heap(cmp);
  auto push = [&](int64_t i) {
    const int64_t j = nxt[i];
    if (j >= n) return;
    const int64_t e = nxt[j];
    const int32_t r = rt.find(p + i, e - i);
    if (r >= 0) heap.push({r, i, e});
  };
  for (int64_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    if (!alive[c.i] || nxt[c.i] >= n || nxt[nxt[c.i]] != c.end) continue;
    const int64_t j = nxt[c.i];
    alive[j] = 0;
    nxt[c.i] = nxt[j];
    if (nxt[j] < n) prv[nxt[j]] = c.i;
    if (prv[c.i] >= 0) push(prv[c.i]);
    push(c.i);
  }
  for (int64_t i = 0; i < n; i = nxt[i]) out.push_back(rt.find(p + i, nxt[i] - i));
}

// Tokens of one chunk: the whole chunk if it is a token, else the byte-pair merge.
inline void encode_piece(const RankTable& rt, const uint8_t* p, int64_t n, std::vector<int64_t>& out) {
  const int32_t r = rt.find(p, n);
  if (r >= 0) { out.push_back(r); return; }
  if (n <= kSmallPiece) merge_small(rt, p, n, out);
  else merge_large(rt, p, n, out);
}

// A per-call cache of chunks that took more than one token; keys point into the caller's text, which outlives it.
struct ChunkCache {
  std::unordered_map<std::string_view, std::pair<int64_t, int64_t>> where;  // chunk -> (offset, count) in store
  std::vector<int64_t> store;
};

inline void encode_piece_cached(const RankTable& rt, const uint8_t* p, int64_t n, std::vector<int64_t>& out, ChunkCache& cache) {
  const int32_t r = rt.find(p, n);
  if (r >= 0) { out.push_back(r); return; }
  const std::string_view key(reinterpret_cast<const char*>(p), size_t(n));
  auto it = cache.where.find(key);
  if (it != cache.where.end()) {
    out.insert(out.end(), cache.store.begin() + it->second.first, cache.store.begin() + it->second.first + it->second.second);
    return;
  }
  const size_t before = out.size();
  if (n <= kSmallPiece) merge_small(rt, p, n, out);
  else merge_large(rt, p, n, out);
  if (cache.where.size() < (1u << 20)) {
    cache.where.emplace(key, std::make_pair(int64_t(cache.store.size()), int64_t(out.size() - before)));
    cache.store.insert(cache.store.end(), out.begin() + before, out.end());
  }
}

void check_bytes(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kByte && t.dim() == 1 && t.is_contiguous(),
              name, " must be a contiguous 1-D uint8 CPU tensor, got ", t.scalar_type(), " of shape ", t.sizes());
}

void check_offsets(const at::Tensor& t, int64_t total, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kLong && t.dim() == 1 && t.is_contiguous() && t.numel() >= 1,
              name, " must be a non-empty contiguous 1-D int64 CPU tensor, got ", t.scalar_type(), " of shape ", t.sizes());
  const int64_t* o = t.const_data_ptr<int64_t>();
  TORCH_CHECK(o[0] == 0 && o[t.numel() - 1] == total, name, " must start at 0 and end at ", total);
  for (int64_t i = 1; i < t.numel(); ++i) TORCH_CHECK(o[i] >= o[i - 1], name, " must be non-decreasing (at ", i, ")");
}

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  auto t = at::empty({int64_t(v.size())}, at::kLong);
  if (!v.empty()) std::memcpy(t.mutable_data_ptr<int64_t>(), v.data(), v.size() * sizeof(int64_t));
  return t;
}

const uint8_t* class_table(const at::Tensor& classes) {
  TORCH_CHECK(classes.scalar_type() == at::kByte && classes.numel() == 0x110000 && classes.is_contiguous(),
              "classes must be a contiguous uint8 tensor of 0x110000 entries");
  return classes.const_data_ptr<uint8_t>();
}

// ---------------------------------------------------------------- the encoder

struct Encoder : torch::CustomClassHolder {
  RankTable rt;
  int64_t pattern;
  at::Tensor classes;  // kept alive: the pre-tokenizer reads it

  Encoder(at::Tensor token_bytes, at::Tensor token_offsets, at::Tensor ranks, int64_t pattern_, at::Tensor classes_)
      : pattern(pattern_), classes(classes_.contiguous()) {
    check_bytes(token_bytes, "token_bytes");
    check_offsets(token_offsets, token_bytes.numel(), "token_offsets");
    TORCH_CHECK(ranks.scalar_type() == at::kLong && ranks.numel() == token_offsets.numel() - 1, "ranks must be int64, one per token");
    TORCH_CHECK(pattern >= kWhole && pattern <= kGpt4, "pattern must be 0 (whole text), 1 (gpt2) or 2 (gpt4), got ", pattern);
    class_table(classes);
    rt.build(token_bytes.const_data_ptr<uint8_t>(), token_offsets.const_data_ptr<int64_t>(),
             ranks.contiguous().const_data_ptr<int64_t>(), ranks.numel());
    for (int b = 0; b < 256; ++b) {
      const uint8_t c = uint8_t(b);
      TORCH_CHECK(rt.find(&c, 1) >= 0, "the ranks have no token for the single byte ", b, ": every byte needs one");
    }
  }

  void encode_text(const uint8_t* s, int64_t n, std::vector<int64_t>& out, ChunkCache& cache) const {
    std::vector<std::pair<int64_t, int64_t>> chunks;
    split(s, n, pattern, classes.const_data_ptr<uint8_t>(), chunks);
    for (auto [a, b] : chunks) encode_piece_cached(rt, s + a, b - a, out, cache);
  }

  at::Tensor encode(at::Tensor text) {
    check_bytes(text, "text");
    std::vector<int64_t> out;
    out.reserve(text.numel() / 3 + 16);
    ChunkCache cache;
    encode_text(text.const_data_ptr<uint8_t>(), text.numel(), out, cache);
    return to_tensor(out);
  }

  // Pre-tokenized elsewhere (a custom regex): chunk k is bytes[offsets[k]:offsets[k+1]].
  at::Tensor encode_chunks(at::Tensor bytes, at::Tensor offsets) {
    check_bytes(bytes, "bytes");
    check_offsets(offsets, bytes.numel(), "offsets");
    const uint8_t* s = bytes.const_data_ptr<uint8_t>();
    const int64_t* o = offsets.const_data_ptr<int64_t>();
    std::vector<int64_t> out;
    ChunkCache cache;
    for (int64_t k = 0; k + 1 < offsets.numel(); ++k) encode_piece_cached(rt, s + o[k], o[k + 1] - o[k], out, cache);
    return to_tensor(out);
  }

  // Text k is bytes[offsets[k]:offsets[k+1]]; returns (ids of all texts concatenated, token count of each text).
  std::tuple<at::Tensor, at::Tensor> encode_batch(at::Tensor bytes, at::Tensor offsets, int64_t num_threads) {
    check_bytes(bytes, "bytes");
    check_offsets(offsets, bytes.numel(), "offsets");
    TORCH_CHECK(num_threads >= 1, "num_threads must be at least 1, got ", num_threads);
    const uint8_t* s = bytes.const_data_ptr<uint8_t>();
    const int64_t* o = offsets.const_data_ptr<int64_t>();
    const int64_t n_texts = offsets.numel() - 1;
    std::vector<std::vector<int64_t>> outs(n_texts);
    std::atomic<int64_t> next{0};
    auto work = [&] {  // threads take texts one at a time: long and short texts balance out
      ChunkCache cache;
      for (int64_t k; (k = next.fetch_add(1)) < n_texts;) encode_text(s + o[k], o[k + 1] - o[k], outs[k], cache);
    };
    const int64_t T = std::min<int64_t>(num_threads, std::max<int64_t>(n_texts, 1));
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < T; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
    auto counts = at::empty({n_texts}, at::kLong);
    int64_t total = 0;
    for (int64_t k = 0; k < n_texts; ++k) { counts.mutable_data_ptr<int64_t>()[k] = int64_t(outs[k].size()); total += outs[k].size(); }
    auto ids = at::empty({total}, at::kLong);
    int64_t* d = ids.mutable_data_ptr<int64_t>();
    for (auto& v : outs) { std::copy(v.begin(), v.end(), d); d += v.size(); }
    return {ids, counts};
  }

  // Chunk boundaries of the built-in pre-tokenizer: offsets (n_chunks + 1), for testing against the regex.
  at::Tensor split_offsets(at::Tensor text) {
    check_bytes(text, "text");
    std::vector<std::pair<int64_t, int64_t>> chunks;
    split(text.const_data_ptr<uint8_t>(), text.numel(), pattern, classes.const_data_ptr<uint8_t>(), chunks);
    std::vector<int64_t> o{0};
    for (auto [a, b] : chunks) o.push_back(b);
    return to_tensor(o);
  }
};

// ---------------------------------------------------------------- the trainer

inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Trainer : torch::CustomClassHolder {
  int64_t pattern;
  at::Tensor classes;
  std::unordered_map<std::string, int64_t> chunk_counts;  // distinct chunk -> occurrences

  // state of the merge loop (after start())
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words that held it (may repeat, may be stale)
  struct Entry { int64_t count; int32_t a, b; };
  struct Less {  // the top is the highest count, then the smallest (a, b): the documented tie-break
    bool operator()(const Entry& x, const Entry& y) const {
      if (x.count != y.count) return x.count < y.count;
      if (x.a != y.a) return x.a > y.a;
      return x.b > y.b;
    }
  };
  std::priority_queue<Entry, std::vector<Entry>, Less> heap;
  std::vector<std::string> vocab;
  std::unordered_map<std::string, int32_t> id_of;
  bool started = false;

  Trainer(int64_t pattern_, at::Tensor classes_) : pattern(pattern_), classes(classes_.contiguous()) {
    TORCH_CHECK(pattern >= kWhole && pattern <= kGpt4, "pattern must be 0 (whole text), 1 (gpt2) or 2 (gpt4), got ", pattern);
    class_table(classes);
  }

  // Pre-tokenize and count texts k = bytes[offsets[k]:offsets[k+1]], threads splitting the texts between them.
  void add_texts(at::Tensor bytes, at::Tensor offsets, int64_t num_threads) {
    TORCH_CHECK(!started, "add_texts: training has started");
    check_bytes(bytes, "bytes");
    check_offsets(offsets, bytes.numel(), "offsets");
    const uint8_t* s = bytes.const_data_ptr<uint8_t>();
    const int64_t* o = offsets.const_data_ptr<int64_t>();
    const int64_t n_texts = offsets.numel() - 1;
    const int64_t T = std::max<int64_t>(1, std::min<int64_t>(num_threads, n_texts));
    std::vector<std::unordered_map<std::string_view, int64_t>> local(T);
    std::atomic<int64_t> next{0};
    auto work = [&](int64_t t) {
      std::vector<std::pair<int64_t, int64_t>> chunks;
      for (int64_t k; (k = next.fetch_add(1)) < n_texts;) {
        chunks.clear();
        split(s + o[k], o[k + 1] - o[k], pattern, classes.const_data_ptr<uint8_t>(), chunks);
        for (auto [a, b] : chunks) ++local[t][std::string_view(reinterpret_cast<const char*>(s + o[k] + a), size_t(b - a))];
      }
    };
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < T; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
    for (auto& m : local)
      for (auto& [k, v] : m) chunk_counts[std::string(k)] += v;
  }

  // Already-counted chunks (a custom regex pre-tokenized in Python): chunk k has bytes[offsets[k]:offsets[k+1]].
  void add_chunks(at::Tensor bytes, at::Tensor offsets, at::Tensor counts) {
    TORCH_CHECK(!started, "add_chunks: training has started");
    check_bytes(bytes, "bytes");
    check_offsets(offsets, bytes.numel(), "offsets");
    TORCH_CHECK(counts.scalar_type() == at::kLong && counts.numel() == offsets.numel() - 1, "counts must be int64, one per chunk");
    const uint8_t* s = bytes.const_data_ptr<uint8_t>();
    const int64_t* o = offsets.const_data_ptr<int64_t>();
    const int64_t* c = counts.contiguous().const_data_ptr<int64_t>();
    for (int64_t k = 0; k + 1 < offsets.numel(); ++k)
      chunk_counts[std::string(reinterpret_cast<const char*>(s + o[k]), size_t(o[k + 1] - o[k]))] += c[k];
  }

  int64_t num_chunks() { return int64_t(started ? words.size() : chunk_counts.size()); }

  // Words in a deterministic order (sorted bytes), so that results never depend on hash-map order.
  void start() {
    TORCH_CHECK(!started, "start: training has already started");
    started = true;
    std::vector<std::pair<std::string, int64_t>> items(chunk_counts.begin(), chunk_counts.end());
    chunk_counts.clear();
    std::sort(items.begin(), items.end());
    words.reserve(items.size());
    for (auto& [w, c] : items) {
      words.emplace_back(w.begin(), w.end());
      for (auto& x : words.back()) x = int32_t(uint8_t(x));
      freq.push_back(c);
    }
    for (int b = 0; b < 256; ++b) { vocab.emplace_back(1, char(b)); id_of[vocab.back()] = b; }
    for (int32_t wi = 0; wi < int32_t(words.size()); ++wi) {
      const auto& w = words[wi];
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        const uint64_t k = pair_key(w[i], w[i + 1]);
        pair_count[k] += freq[wi];
        auto& v = where[k];
        if (v.empty() || v.back() != wi) v.push_back(wi);
      }
    }
    for (auto& [k, c] : pair_count) heap.push({c, int32_t(k >> 32), int32_t(k & 0xffffffffu)});
  }

  // Up to max_merges merges while the vocabulary is below vocab_size; rows (left, right, new id). Fewer rows
  // than asked means training is over (vocabulary full, no pairs left, or the best count below min_frequency).
  at::Tensor step(int64_t max_merges, int64_t vocab_size, int64_t min_frequency) {
    TORCH_CHECK(started, "step: call start() first");
    std::vector<int64_t> rows;
    std::vector<int32_t> nw;
    std::vector<uint64_t> grown;
    for (int64_t m = 0; m < max_merges && int64_t(vocab.size()) < vocab_size && !heap.empty();) {
      const Entry e = heap.top();
      heap.pop();
      const uint64_t key = pair_key(e.a, e.b);
      auto pc = pair_count.find(key);
      const int64_t c = pc == pair_count.end() ? 0 : pc->second;
      if (c != e.count) {  // stale (lazy deletion): re-queue a fallen count; a grown one was pushed when it grew
        if (c > 0 && c < e.count) heap.push({c, e.a, e.b});
        continue;
      }
      if (c < min_frequency) { heap.push(e); break; }
      const std::string merged = vocab[e.a] + vocab[e.b];
      int32_t new_id;
      auto it = id_of.find(merged);
      if (it != id_of.end()) new_id = it->second;  // another split already made these bytes: reuse the token
      else { new_id = int32_t(vocab.size()); vocab.push_back(merged); id_of.emplace(merged, new_id); }
      rows.insert(rows.end(), {e.a, e.b, new_id});
      ++m;
      std::vector<int32_t> holders = std::move(where[key]);
      where.erase(key);
      grown.clear();
      for (int32_t wi : holders) {
        auto& w = words[wi];
        nw.clear();
        for (size_t i = 0; i < w.size();) {
          if (i + 1 < w.size() && w[i] == e.a && w[i + 1] == e.b) { nw.push_back(new_id); i += 2; }
          else nw.push_back(w[i++]);
        }
        if (nw.size() == w.size()) continue;  // stale holder: the pair left this word in an earlier merge
        const int64_t f = freq[wi];
        for (size_t i = 0; i + 1 < w.size(); ++i) pair_count[pair_key(w[i], w[i + 1])] -= f;
        for (size_t i = 0; i + 1 < nw.size(); ++i) {
          const uint64_t k = pair_key(nw[i], nw[i + 1]);
          pair_count[k] += f;
          if (nw[i] == new_id || nw[i + 1] == new_id) {
            auto& v = where[k];
            if (v.empty() || v.back() != wi) v.push_back(wi);
            grown.push_back(k);
          }
        }
        w.swap(nw);
      }
      pair_count.erase(key);
      std::sort(grown.begin(), grown.end());
      grown.erase(std::unique(grown.begin(), grown.end()), grown.end());
      for (uint64_t k : grown) {
        auto g = pair_count.find(k);
        if (g != pair_count.end() && g->second > 0) heap.push({g->second, int32_t(k >> 32), int32_t(k & 0xffffffffu)});
      }
    }
    auto t = at::empty({int64_t(rows.size() / 3), 3}, at::kLong);
    if (!rows.empty()) std::memcpy(t.mutable_data_ptr<int64_t>(), rows.data(), rows.size() * sizeof(int64_t));
    return t;
  }
};

}  // namespace

TORCH_LIBRARY(tgb_bpe, m) {
  m.class_<Encoder>("Encoder")
      .def(torch::init<at::Tensor, at::Tensor, at::Tensor, int64_t, at::Tensor>())
      .def("encode", &Encoder::encode)
      .def("encode_chunks", &Encoder::encode_chunks)
      .def("encode_batch", &Encoder::encode_batch)
      .def("split_offsets", &Encoder::split_offsets);
  m.class_<Trainer>("Trainer")
      .def(torch::init<int64_t, at::Tensor>())
      .def("add_texts", &Trainer::add_texts)
      .def("add_chunks", &Trainer::add_chunks)
      .def("num_chunks", &Trainer::num_chunks)
      .def("start", &Trainer::start)
      .def("step", &Trainer::step);
}
