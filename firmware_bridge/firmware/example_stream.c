/*
 * example_stream.c - writes a fixed set of emofuse protocol packets to stdout.
 *
 * A worked example for firmware authors of how emofuse_proto.h is used, and the fixture of
 * tests/firmware_bridge/test_firmware_c.py, which decodes this program's output with the
 * Python decoder and compares it, byte for byte, with the same messages encoded in Python.
 * Keep the two in step when changing either.
 *
 *   cc -std=c99 -Wall -Wextra -Werror -pedantic -I. example_stream.c -o example_stream
 *   ./example_stream > stream.bin
 */
#include <math.h>
#include <stdio.h>

#include "emofuse_proto.h"

static uint8_t packet[EMOFUSE_MAX_PACKET_LEN];

static int emit(size_t len)
{
    if (len == 0u) {
        fputs("example_stream: a packet did not fit or had a bad argument\n", stderr);
        return 1;
    }
    return fwrite(packet, 1u, len, stdout) == len ? 0 : 1;
}

int main(void)
{
    static const emofuse_stream_info streams[] = {
        {EMOFUSE_STREAM_ECG, EMOFUSE_SAMPLE_INT16, 1u, 250000u, 0.001f, 0.0f, "mV"},
        {EMOFUSE_STREAM_PPG_RED, EMOFUSE_SAMPLE_INT32, 1u, 100000u, 1.0f, 0.0f, "a.u."},
        {EMOFUSE_STREAM_PPG_IR, EMOFUSE_SAMPLE_INT32, 1u, 100000u, 1.0f, 0.0f, "a.u."},
        {EMOFUSE_STREAM_EDA, EMOFUSE_SAMPLE_FLOAT32, 1u, 4000u, 1.0f, 0.0f, "uS"},
        {EMOFUSE_STREAM_SKIN_TEMP, EMOFUSE_SAMPLE_INT16, 1u, 1000u, 0.0078125f, 0.0f, "degC"},
        {EMOFUSE_STREAM_RESP, EMOFUSE_SAMPLE_INT16, 1u, 25000u, 1.0f, -512.0f, "a.u."},
        {EMOFUSE_STREAM_ACCEL, EMOFUSE_SAMPLE_INT16, 3u, 50000u, 0.000244140625f, 0.0f, "g"},
    };
    const emofuse_device_info info = {1u, 2u, 3u, 0xC0FFEE01u, "emofuse-devkit", streams, 7u};
    const uint64_t t0_us = 5000000000ull; /* past 2^32 us, so the upper half is used */
    int16_t ecg[10];
    int16_t ecg_long[501];
    int32_t ppg_red[8];
    int32_t ppg_ir[64];
    float eda[4];
    int16_t skin_temp[1] = {4672};  /* 36.5 degC */
    int16_t resp[5] = {0, 1, -1, 32767, -32768};
    int16_t accel[4 * 3];
    int fails = 0;
    int block, i;
    uint16_t seq = 65534u;

    /* A lone delimiter first: it ends whatever half frame the host may hold from before. */
    fputc(0, stdout);

    fails += emit(emofuse_build_device_info(packet, sizeof packet, 0u, t0_us, &info));

    /* Three ECG blocks across the sequence-number wrap 65535 -> 0. */
    for (block = 0; block < 3; ++block) {
        for (i = 0; i < 10; ++i) {
            ecg[i] = (int16_t)((block * 10 + i) * 37 - 300);
        }
        fails += emit(emofuse_build_samples_i16(packet, sizeof packet, EMOFUSE_STREAM_ECG, seq,
                                                t0_us + (uint64_t)block * 40000u, 1u, 10u, ecg));
        seq = (uint16_t)(seq + 1u);
    }

    for (i = 0; i < 8; ++i) {
        ppg_red[i] = 100000 * i - 2000000000;
    }
    fails += emit(emofuse_build_samples_i32(packet, sizeof packet, EMOFUSE_STREAM_PPG_RED, 7u, t0_us, 1u, 8u,
                                            ppg_red));

    /* 256 non-zero bytes in a row: exercises the 254-byte COBS block. */
    for (i = 0; i < 64; ++i) {
        ppg_ir[i] = 0x01010101;
    }
    fails += emit(emofuse_build_samples_i32(packet, sizeof packet, EMOFUSE_STREAM_PPG_IR, 0u, t0_us, 1u, 64u,
                                            ppg_ir));

    eda[0] = 2.5f;
    eda[1] = -0.0f;
    eda[2] = (float)NAN;
    eda[3] = 1.0e-3f;
    fails += emit(emofuse_build_samples_f32(packet, sizeof packet, EMOFUSE_STREAM_EDA, 1u, t0_us + 250000u, 1u,
                                            4u, eda));
    fails += emit(emofuse_build_samples_i16(packet, sizeof packet, EMOFUSE_STREAM_SKIN_TEMP, 2u,
                                            18446744073709551615ull, 1u, 1u, skin_temp));
    fails += emit(emofuse_build_samples_i16(packet, sizeof packet, EMOFUSE_STREAM_RESP, 3u, 0u, 1u, 5u, resp));

    for (i = 0; i < 4 * 3; ++i) {
        accel[i] = (int16_t)(i % 3 == 2 ? 4096 : 17 * i - 100);  /* z carries 1 g */
    }
    fails += emit(emofuse_build_samples_i16(packet, sizeof packet, EMOFUSE_STREAM_ACCEL, 4u, t0_us, 3u, 4u, accel));

    /* The largest int16 block that fits in one packet. */
    for (i = 0; i < 501; ++i) {
        ecg_long[i] = (int16_t)(i * 131 + 1);
    }
    fails += emit(emofuse_build_samples_i16(packet, sizeof packet, EMOFUSE_STREAM_ECG, 1u, t0_us + 120000u, 1u,
                                            501u, ecg_long));

    fails += emit(emofuse_build_ack(packet, sizeof packet, EMOFUSE_OP_START, EMOFUSE_STREAM_ALL, 42u,
                                    t0_us + 1u, EMOFUSE_STATUS_OK, NULL));
    fails += emit(emofuse_build_ack(packet, sizeof packet, EMOFUSE_OP_SET_RATE, EMOFUSE_STREAM_EDA, 43u,
                                    t0_us + 2u, EMOFUSE_STATUS_BAD_RATE, "rate 0 mHz"));
    fails += emit(emofuse_build_command(packet, sizeof packet, EMOFUSE_OP_SET_RATE, EMOFUSE_STREAM_ECG, 44u, 123u,
                                        500000u));

    /* A block that cannot fit must be refused (length 0), never truncated. */
    if (emofuse_build_samples_i16(packet, 40u, EMOFUSE_STREAM_ECG, 0u, 0u, 1u, 501u, ecg_long) != 0u) {
        fputs("example_stream: a too-small buffer was not refused\n", stderr);
        fails += 1;
    }
    fflush(stdout);
    return fails == 0 ? 0 : 1;
}
