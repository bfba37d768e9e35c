/* Weights read from the model file every pass instead of held in memory ("beyond RAM").
 *
 * The model is described as groups of tensors run in a fixed order every pass (a layer's seven
 * matrices, then the output head). Each tensor is either pinned (read once at open into memory of
 * this module's own, anonymous, never the page cache with direct reads) or streamed: a pool of
 * reader threads preads the streamed tensors of the next groups into a ring of `depth` buffers
 * while the current group computes. Reads never go through the mmap, so streamed weights do not
 * pile up in the page cache (with O_DIRECT they do not enter it at all).
 *
 * The file is checked on every fetch (fstat: size, mtime, inode) and its path once per pass; a
 * change, a short read or an I/O error fails the fetch with a message and an errno, sticky for
 * the stream's lifetime (what was read may be a mix of two files).
 */
#ifndef FC_MODEL_STREAM_H
#define FC_MODEL_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "fastcpu/fastcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FC_STREAM_MAX_PER_GROUP 8

typedef struct {
    uint64_t off, bytes; /* the tensor's bytes in the file; bytes 0: unused slot */
    int pinned;          /* 1: read once at open; 0: read every pass */
} fc_stream_tensor;

typedef struct {
    const char *path;
    int n_groups;               /* run in this order every pass */
    int per_group;              /* tensors per group, <= FC_STREAM_MAX_PER_GROUP */
    const fc_stream_tensor *t;  /* [n_groups][per_group] */
    /* embedding rows: read one at a time, or served from a pinned tensor (alias >= 0: index
     * group * per_group + i of that tensor) */
    uint64_t embd_off;
    size_t embd_row_bytes;
    int embd_qtype;
    int embd_alias;
    int depth;     /* ring buffers (>= 2): groups in flight = depth - 1 ahead of the one computing */
    int readers;   /* reader threads (>= 1) */
    int direct;    /* 1: O_DIRECT (4096-aligned supersets), 0: buffered pread */
    size_t chunk;  /* bytes per read request (a multiple of 4096) */
} fc_stream_config;

typedef struct fc_stream fc_stream;

/* Opens the file, reads the pinned tensors, allocates the ring and starts the readers (the
 * first depth groups are requested at once). NULL on failure with a message in err and the
 * errno in *err_no (0 when not an OS error). */
FC_API fc_stream *fc_stream_open(const fc_stream_config *cfg, char *err, size_t err_len, int *err_no);
FC_API void fc_stream_close(fc_stream *s);

/* Pointers to group g's tensors for this pass (ptrs[i] for tensor i; NULL for unused slots).
 * The buffers stay valid until the next fetch of another streamed group. Groups are expected in
 * order (0, 1, ..., n-1, 0, ...); any other order drains the ring and starts over from g.
 * Returns 0 or -2 (see fc_stream_error). */
FC_API int fc_stream_fetch(fc_stream *s, int g, const void **ptrs);
/* Dequantizes embedding row `token` (dim values) into dst. 0 or -2. */
FC_API int fc_stream_embd_row(fc_stream *s, int32_t token, float *dst, int64_t dim);

/* The failure: message, errno (0: not an OS error) and whether the file changed on disk. */
FC_API const char *fc_stream_error(const fc_stream *s, int *err_no, int *changed);

/* Tests: the next read of a streamed chunk fails with err_no (an I/O error cannot be provoked on
 * demand). */
FC_API void fc_stream_inject_error(fc_stream *s, int err_no);

/* Memory of this module's own: pinned tensors and the ring (the two make the budget). */
FC_API size_t fc_stream_pinned_bytes(const fc_stream *s);
FC_API size_t fc_stream_ring_bytes(const fc_stream *s);
/* Bytes read from the file by streaming (aligned supersets included) and the seconds the
 * fetches waited for them, since open or the last reset. */
FC_API void fc_stream_counters(const fc_stream *s, uint64_t *bytes_read, double *wait_s, uint64_t *passes);
FC_API void fc_stream_reset_counters(fc_stream *s);
/* Bytes of a ring slot a group needs (aligned reads of its streamed tensors), without opening:
 * the planner's minimum budget uses it. */
FC_API size_t fc_stream_group_slot_bytes(const fc_stream_tensor *t, int n, int direct);

/* Reads `bytes` from `path` at `off`.. sequentially with the same method (readers, chunk,
 * O_DIRECT) into a ring of its own: the disk limit for the same read method. Returns bytes/s,
 * or a negative -errno. */
FC_API double fc_stream_read_bandwidth(const char *path, uint64_t off, uint64_t bytes, int readers, int direct,
                                       size_t chunk);

#ifdef __cplusplus
}
#endif
#endif
