/* A tokenizer vocabulary in compact C memory, and the merge loops of the two BPE flavours llama.cpp
 * runs (fastcpu/tokenizer.py does everything else: special tokens, pre-tokenizer, decoding).
 *
 * Strings (token texts, as UTF-8 bytes) live in one blob with an offset per id and an open-addressing
 * hash of ids; byte-level BPE merges in a hash keyed by the pair of symbol ids. For SmolLM2 (49152
 * tokens, 48900 merges) that is ~3 MB, where Python dicts of str/tuple/int objects took ~15 MB.
 *
 * Ids 0..n_vocab-1 are the vocabulary. A merge whose halves or result are not vocabulary entries
 * (rare, but llama.cpp still applies it: it merges strings) gets "virtual" ids from n_vocab up for
 * those strings, so the merge loop can work on ids and still do exactly what llama.cpp does.
 */
#ifndef FC_MODEL_VOCAB_H
#define FC_MODEL_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "fastcpu/fastcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fc_vocab fc_vocab;

FC_API fc_vocab *fc_vocab_new(void);
FC_API void fc_vocab_free(fc_vocab *v);

/* Adds a string with the next id. Returns the id, -1 when out of memory, or -2 - id when the string
 * is already there (with that id). */
FC_API int64_t fc_vocab_add(fc_vocab *v, const char *s, size_t len);
/* Id of a string (a virtual one too), -1 if absent. */
FC_API int64_t fc_vocab_find(const fc_vocab *v, const char *s, size_t len);
FC_API int64_t fc_vocab_count(const fc_vocab *v);
/* The bytes of id's string (id < fc_vocab_count). */
FC_API const char *fc_vocab_text(const fc_vocab *v, int64_t id, size_t *len);
/* Ids below n_vocab are the vocabulary, the rest virtual (set once every token is added). */
FC_API void fc_vocab_set_n_vocab(fc_vocab *v, int64_t n_vocab);

/* Adds merge `rank` given as its GGUF text "left right" (split at the first space after the first
 * byte, as llama.cpp splits it); the first merge of a pair keeps its rank. Returns 0, or -1 when
 * out of memory. Merges with no space or an empty half are skipped (no live symbol is empty). */
FC_API int fc_vocab_add_merge(fc_vocab *v, const char *m, size_t len, int32_t rank);
FC_API int64_t fc_vocab_merge_count(const fc_vocab *v);

/* Byte-level BPE tables, set after the merges: byte_sym[b] = id of the printable character byte b
 * stands for (every one has an id: fc_vocab_add them first if missing), ascii_id[c] = vocabulary id
 * of the one-byte string c (< 0x80) or -1 (llama.cpp's fallback for a symbol not in the vocabulary). */
FC_API void fc_vocab_set_bytes(fc_vocab *v, const int32_t byte_sym[256], const int32_t ascii_id[128]);
/* SentencePiece-style tables: a score per vocabulary id (double: GGUF's are float32, but a caller's
 * own may not be, and rounding could make ties), and the byte-fallback id of each byte (<0xXX>,
 * else the one-byte token for ASCII) or -1. scores is copied. Returns 0 or -1 (no memory). */
FC_API int fc_vocab_set_spm(fc_vocab *v, const double *scores, const int32_t byte_id[256]);

/* The ids of one pre-tokenized word (its UTF-8 bytes) after byte-level BPE merges by rank. out holds
 * at least len ids. Returns the count, or -1 when out of memory. */
FC_API int64_t fc_vocab_bpe(const fc_vocab *v, const uint8_t *word, size_t len, int32_t *out);
/* The ids of a text (UTF-8, spaces already U+2581) after SentencePiece-style merges by score, with
 * byte fallback. out holds at least len ids. Returns the count, -1 when out of memory, or
 * -2 - byte when a byte has no fallback token. */
FC_API int64_t fc_vocab_spm(const fc_vocab *v, const uint8_t *text, size_t len, int32_t *out);

/* Bytes of C memory the vocabulary holds. */
FC_API size_t fc_vocab_bytes(const fc_vocab *v);
/* Gives back the spare capacity of the growing arrays (call once the vocabulary is complete). */
FC_API void fc_vocab_shrink(fc_vocab *v);

#ifdef __cplusplus
}
#endif
#endif
