/* tinytrain.h - on-device training of an adapted tinytrain model (plain C99, no malloc).
 *
 * `tinytrain export --format c` writes this header, the runtime sources and one generated file
 * (tt_model.c) holding the frozen weights, the update plan and a statically sized arena.
 *
 * Typical use on a device:
 *
 *     tt_init();
 *     uint8_t *frame = tt_input_buffer();          // RGB, HWC, tt_resolution() x tt_resolution()
 *     ... fill `frame` from the camera, then:
 *     float loss = tt_train_step(frame, label);    // one sparse-update step on one labelled image
 *     int cls = tt_predict(frame, logits);         // class index; logits may be NULL
 *
 * Images are 8-bit RGB, row-major, 3 bytes per pixel, already resized and centre-cropped to the
 * model's resolution (the same crop `tinytrain predict` uses). Normalisation is done inside.
 * Only one image is processed at a time (batch 1). The functions are not re-entrant.
 */
#ifndef TINYTRAIN_H
#define TINYTRAIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reset the trained channels, the optimizer state and the prototypes to the exported ones. */
void tt_init(void);

/* A frame buffer of tt_resolution()^2 * 3 bytes inside the arena. Its content is consumed at the
 * start of tt_train_step / tt_predict / tt_prototypes_add and destroyed afterwards. */
uint8_t *tt_input_buffer(void);

/* Forward, cosine-prototype cross-entropy, backward through the trained suffix, one optimizer
 * step on the selected channels. Returns the loss, or -1 if `label` is out of range. */
float tt_train_step(const uint8_t *rgb, int label);

/* Class index of `rgb`; if `logits` is not NULL it receives tt_num_classes() scores. */
int tt_predict(const uint8_t *rgb, float *logits);

/* Replace the class prototypes (n_classes x tt_feature_dim() floats). Returns 0, or -1 if
 * n_classes differs from tt_num_classes(). */
int tt_set_prototypes(const float *prototypes, int n_classes);

/* Recompute the prototypes as class means of features under the current weights, one image at a
 * time: begin, add every labelled image, end. Between begin and end the prototypes are partial
 * sums and must not be used. `end` returns 0, or -1 if a class received no image (its prototype
 * is then left at zero). `add` returns -1 for a label out of range. */
void tt_prototypes_begin(void);
int tt_prototypes_add(const uint8_t *rgb, int label);
int tt_prototypes_end(void);

/* The same from n images in memory (e.g. in flash). Returns what tt_prototypes_end returns. */
int tt_update_prototypes(const uint8_t *const *rgb, const int *labels, int n);

/* int8 exports: run only the int8 prefix on `rgb` and point `out` at its int8 output (inside the
 * arena, valid until the next call); returns its element count (C x H x W), or 0 in a float export.
 * For checking the integer arithmetic, or for caching frozen features. */
long tt_int8_prefix(const uint8_t *rgb, const int8_t **out);

int tt_resolution(void);
int tt_num_classes(void);
int tt_feature_dim(void);
uint32_t tt_arena_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* TINYTRAIN_H */
