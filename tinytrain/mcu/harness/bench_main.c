/* bench_main.c - trains on the bench images with the device schedule and prints what happened.
 *
 * Schedule: per epoch, prototypes from the training images, then one tt_train_step per training
 * image; then prototypes again and tt_predict on every held-out image. Every image goes through
 * tt_input_buffer(), as a camera frame would. Output: one record per line, floats as the hex of
 * their bits, parsed by tinytrain.mcu.build.parse_output. */
#include <string.h>

#include "bench.h"
#include "tinytrain.h"
#include "tt_model.h"

#define CALIBRATION_ITERATIONS 100000u

static void put(const char *s) { port_write(s, (int)strlen(s)); }

static void put_u(uint64_t v)
{
    char b[24];
    int i = 23;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b + i);
}

static void put_i(long v)
{
    if (v < 0) {
        put("-");
        v = -v;
    }
    put_u((uint64_t)v);
}

static void put_hex(float f)
{
    static const char digits[] = "0123456789abcdef";
    uint32_t u;
    char b[10];
    memcpy(&u, &f, sizeof u);
    b[0] = ' ';
    for (int i = 0; i < 8; i++)
        b[1 + i] = digits[(u >> (28 - 4 * i)) & 15];
    b[9] = 0;
    put(b);
}

/* bytes as hex, 32 per chunk written */
static void put_bytes(const uint8_t *a, long n)
{
    static const char digits[] = "0123456789abcdef";
    char b[65];
    long i = 0;
    while (i < n) {
        int k = 0;
        for (; k < 32 && i < n; k++, i++) {
            b[2 * k] = digits[a[i] >> 4];
            b[2 * k + 1] = digits[a[i] & 15];
        }
        b[2 * k] = 0;
        put(b);
    }
    put("\n");
}

static void put_floats(const float *a, int n)
{
    for (int i = 0; i < n; i++)
        put_hex(a[i]);
    put("\n");
}

static int prototypes(void)
{
    uint8_t *frame = tt_input_buffer();
    tt_prototypes_begin();
    for (int i = 0; i < bench_n_train; i++) {
        memcpy(frame, bench_train_images + (long)i * bench_image_bytes, (size_t)bench_image_bytes);
        if (tt_prototypes_add(frame, bench_train_labels[i]) != 0)
            return -1;
    }
    return tt_prototypes_end();
}

static int slice_floats(const tt_layer *l)
{
    const int row = l->kind == TT_DW ? l->k * l->k : (l->axis == TT_AXIS_OUT ? l->cin : l->cout);
    return l->n_sel * row;
}

int main(void)
{
    uint8_t *frame;
    port_init();
    put("tt-bench 1\n");
    put("calibration ");
    put_u(CALIBRATION_ITERATIONS);
    put(" ");
    put_u(port_calibration_ticks(CALIBRATION_ITERATIONS));
    put("\n");
    if (bench_image_bytes != tt_resolution() * tt_resolution() * 3) {
        put("error bench data does not match the model\n");
        return 1;
    }
    tt_init();
    frame = tt_input_buffer();
    put("arena_bytes ");
    put_u(tt_arena_bytes());
    put("\n");
    for (int e = 0; e < bench_epochs; e++) {
        uint64_t t0 = port_ticks();
        if (prototypes() != 0) {
            put("error a class has no training image\n");
            return 1;
        }
        put("prototypes ");
        put_u(port_ticks() - t0);
        put("\n");
        for (int i = 0; i < bench_n_train; i++) {
            memcpy(frame, bench_train_images + (long)i * bench_image_bytes, (size_t)bench_image_bytes);
            t0 = port_ticks();
            const float loss = tt_train_step(frame, bench_train_labels[i]);
            const uint64_t ticks = port_ticks() - t0;
            put("step ");
            put_u(ticks);
            put_hex(loss);
            put("\n");
        }
    }
    if (prototypes() != 0)
        return 1;
    for (int j = 0; j < bench_n_test; j++) {
        memcpy(frame, bench_test_images + (long)j * bench_image_bytes, (size_t)bench_image_bytes);
        const uint64_t t0 = port_ticks();
        const int cls = tt_predict(frame, 0);
        const uint64_t ticks = port_ticks() - t0;
        put("predict ");
        put_u(ticks);
        put(" ");
        put_i(cls);
        put_floats(tt_arena + tt_net.logits, tt_num_classes());
    }
    for (int j = 0; j < bench_n_test && tt_net.n_int8; j++) {   /* int8 exports: the prefix's output */
        const int8_t *q;
        memcpy(frame, bench_test_images + (long)j * bench_image_bytes, (size_t)bench_image_bytes);
        const long n = tt_int8_prefix(frame, &q);
        put("prefix ");
        put_i(j);
        put(" ");
        put_bytes((const uint8_t *)q, n);
    }
    for (int i = 0; i < tt_net.n_layers; i++) {
        const tt_layer *l = &tt_layers[i];
        if (l->n_sel) {
            put("weights ");
            put_i(i);
            put_floats(tt_arena + l->wt, slice_floats(l));
        }
        if (l->bt >= 0) {
            put("shift ");
            put_i(i);
            put_floats(tt_arena + l->bt, l->cout);
        }
    }
    put("stack_bytes ");
    put_i(port_stack_bytes());
    put("\nheap_bytes ");
    put_i(port_heap_bytes());
    put("\nend\n");
    return 0;
}
