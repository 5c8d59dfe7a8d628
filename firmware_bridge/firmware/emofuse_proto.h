/*
 * emofuse_proto.h - the emofuse sensor wire protocol, version 1, for firmware.
 *
 * Header-only C99. No dynamic allocation, no libc beyond <stdint.h>, <stddef.h> and
 * <string.h>, no global state: every function works on buffers the caller provides, so it
 * may be called from any task (not re-entrantly on the same buffer).
 *
 * The specification is docs/protocol.md in the emofuse repository. In short:
 *   packet  = COBS(payload) 0x00                      (Cheshire & Baker 1999)
 *   payload = header(13) body CRC-32(4)                little-endian, packed
 *   header  = version u8 | type u8 | stream_id u8 | seq u16 | t_us u64
 *   CRC     = CRC-32/ISO-HDLC of header+body (poly 0x04C11DB7 reflected, init and xorout
 *             0xFFFFFFFF, check value 0xCBF43926 for "123456789")
 *
 * Sending (device to host): build a packet into a buffer, then write it to the UART.
 *
 *   static uint8_t pkt[EMOFUSE_SAMPLES_PACKET_LEN(20, 1, 2)];
 *   size_t n = emofuse_build_samples_i16(pkt, sizeof pkt, EMOFUSE_STREAM_ECG, seq++, t_us,
 *                                        1, 20, ecg_block);
 *   if (n) uart_write(pkt, n);          (0 means the buffer or an argument was wrong)
 *
 * Receiving commands (host to device): push every received byte into an emofuse_rx.
 *
 *   static emofuse_rx rx;               (zero-initialised, or emofuse_rx_init(&rx))
 *   emofuse_command cmd;
 *   if (emofuse_rx_push(&rx, byte, &cmd) == EMOFUSE_RX_COMMAND) { handle cmd, send ack }
 *
 * Floats are sent as IEEE-754 binary32; the header refuses to compile where float is not
 * 32 bits wide. Byte order on the wire is little-endian whatever the CPU's order.
 */
#ifndef EMOFUSE_PROTO_H
#define EMOFUSE_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Sizes (all compile-time constants) -------------------------------------------- */

#define EMOFUSE_PROTO_VERSION 1u
#define EMOFUSE_HEADER_LEN 13u
#define EMOFUSE_CRC_LEN 4u
#define EMOFUSE_MIN_PAYLOAD_LEN (EMOFUSE_HEADER_LEN + EMOFUSE_CRC_LEN)
#define EMOFUSE_MAX_PAYLOAD_LEN 1024u
/* Largest COBS encoding of n bytes (no delimiter), and the packet with its delimiter. */
#define EMOFUSE_COBS_MAX_LEN(n) ((n) + (n) / 254u + 1u)
#define EMOFUSE_PACKET_MAX_LEN(payload_len) (EMOFUSE_COBS_MAX_LEN(payload_len) + 1u)
#define EMOFUSE_MAX_ENCODED_LEN EMOFUSE_COBS_MAX_LEN(EMOFUSE_MAX_PAYLOAD_LEN)   /* 1029 */
#define EMOFUSE_MAX_PACKET_LEN EMOFUSE_PACKET_MAX_LEN(EMOFUSE_MAX_PAYLOAD_LEN)  /* 1030 */

#define EMOFUSE_SAMPLES_HEADER_LEN 4u
#define EMOFUSE_MAX_SAMPLE_BYTES \
    (EMOFUSE_MAX_PAYLOAD_LEN - EMOFUSE_MIN_PAYLOAD_LEN - EMOFUSE_SAMPLES_HEADER_LEN) /* 1003 */
/* Buffer size for a samples packet of n instants x ch channels of sample_size bytes. */
#define EMOFUSE_SAMPLES_PACKET_LEN(n, ch, sample_size) \
    EMOFUSE_PACKET_MAX_LEN(EMOFUSE_MIN_PAYLOAD_LEN + EMOFUSE_SAMPLES_HEADER_LEN + (n) * (ch) * (sample_size))

#define EMOFUSE_COMMAND_BODY_LEN 5u
#define EMOFUSE_COMMAND_PAYLOAD_LEN (EMOFUSE_MIN_PAYLOAD_LEN + EMOFUSE_COMMAND_BODY_LEN) /* 22 */
#define EMOFUSE_COMMAND_PACKET_LEN EMOFUSE_PACKET_MAX_LEN(EMOFUSE_COMMAND_PAYLOAD_LEN)   /* 24 */

#define EMOFUSE_MAX_NAME_BYTES 32u
#define EMOFUSE_MAX_UNITS_BYTES 16u
#define EMOFUSE_MAX_DETAIL_BYTES 64u
#define EMOFUSE_ACK_PACKET_LEN \
    EMOFUSE_PACKET_MAX_LEN(EMOFUSE_MIN_PAYLOAD_LEN + 3u + EMOFUSE_MAX_DETAIL_BYTES)    /* 86 */
/* Device info with n streams whose units strings are at most EMOFUSE_MAX_UNITS_BYTES. */
#define EMOFUSE_DEVICE_INFO_PACKET_LEN(n_streams)                                     \
    EMOFUSE_PACKET_MAX_LEN(EMOFUSE_MIN_PAYLOAD_LEN + 8u + EMOFUSE_MAX_NAME_BYTES + 1u + \
                           (n_streams) * (16u + EMOFUSE_MAX_UNITS_BYTES))

/* ---- Codes --------------------------------------------------------------------------- */

enum emofuse_msg_type {
    EMOFUSE_MSG_SAMPLES = 0x01,     /* device -> host */
    EMOFUSE_MSG_DEVICE_INFO = 0x02, /* device -> host */
    EMOFUSE_MSG_ACK = 0x03,         /* device -> host */
    EMOFUSE_MSG_COMMAND = 0x81      /* host -> device (high bit set) */
};

enum emofuse_stream_id {
    EMOFUSE_STREAM_NONE = 0x00,
    EMOFUSE_STREAM_ECG = 0x01,       /* mV */
    EMOFUSE_STREAM_PPG_RED = 0x02,   /* a.u. */
    EMOFUSE_STREAM_PPG_IR = 0x03,    /* a.u. */
    EMOFUSE_STREAM_EDA = 0x04,       /* uS */
    EMOFUSE_STREAM_SKIN_TEMP = 0x05, /* degC */
    EMOFUSE_STREAM_RESP = 0x06,      /* a.u. */
    EMOFUSE_STREAM_ACCEL = 0x07,     /* g, 3 channels x, y, z */
    EMOFUSE_STREAM_ALL = 0xFF        /* commands only: every stream */
};

enum emofuse_sample_type {
    EMOFUSE_SAMPLE_INT16 = 1,
    EMOFUSE_SAMPLE_INT32 = 2,
    EMOFUSE_SAMPLE_FLOAT32 = 3
};

enum emofuse_opcode {
    EMOFUSE_OP_START = 0x01,
    EMOFUSE_OP_STOP = 0x02,
    EMOFUSE_OP_SET_RATE = 0x03,
    EMOFUSE_OP_GET_INFO = 0x04
};

enum emofuse_status {
    EMOFUSE_STATUS_OK = 0,
    EMOFUSE_STATUS_UNKNOWN_OPCODE = 1,
    EMOFUSE_STATUS_BAD_STREAM = 2,
    EMOFUSE_STATUS_BAD_RATE = 3,
    EMOFUSE_STATUS_BUSY = 4,
    EMOFUSE_STATUS_FAILED = 5
};

/* Results of parsing a received frame. */
enum emofuse_result {
    EMOFUSE_OK = 0,
    EMOFUSE_ERR_COBS = -1,    /* a code byte points past the end of the frame */
    EMOFUSE_ERR_LENGTH = -2,  /* too short, too long, or wrong for its type */
    EMOFUSE_ERR_CRC = -3,     /* damaged in transit */
    EMOFUSE_ERR_VERSION = -4, /* intact, but not protocol version 1 */
    EMOFUSE_ERR_TYPE = -5     /* intact, but not a message this side accepts */
};

/* The wire format carries floats as their IEEE-754 binary32 bit pattern. */
typedef char emofuse_float_must_be_32_bits[(sizeof(float) == 4u) ? 1 : -1];

/* ---- CRC-32/ISO-HDLC ------------------------------------------------------------------ */

/* Continue a CRC over more bytes. Start with crc = 0xFFFFFFFF, finish with ~crc. */
static inline uint32_t emofuse_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    /* Half-byte table: 64 bytes of flash, two lookups per byte, no 1 KiB table. */
    static const uint32_t nibble[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    size_t i;
    for (i = 0; i < len; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ nibble[crc & 0x0Fu];
    }
    return crc;
}

/* CRC-32/ISO-HDLC of a buffer; emofuse_crc32("123456789", 9) == 0xCBF43926. */
static inline uint32_t emofuse_crc32(const uint8_t *data, size_t len)
{
    return ~emofuse_crc32_update(0xFFFFFFFFu, data, len);
}

/* ---- Packet writer: header + body + CRC, COBS-encoded on the fly ---------------------- */

/* Builds one packet straight into the caller's buffer, with no payload copy: each byte is
 * added to the CRC and COBS-stuffed as it is written. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t len;         /* bytes written to out so far */
    size_t code_pos;    /* where the current COBS code byte goes */
    size_t payload_len; /* un-stuffed bytes so far */
    uint32_t crc;
    uint8_t code;
    uint8_t failed;
} emofuse_writer;

static inline void emofuse__reserve_code(emofuse_writer *w)
{
    if (w->len >= w->cap) {
        w->failed = 1u;
        return;
    }
    w->code_pos = w->len++;
    w->code = 1u;
}

static inline void emofuse__stuff(emofuse_writer *w, uint8_t byte)
{
    if (w->failed) {
        return;
    }
    if (byte == 0u) {
        w->out[w->code_pos] = w->code;
        emofuse__reserve_code(w);
        return;
    }
    if (w->len >= w->cap) {
        w->failed = 1u;
        return;
    }
    w->out[w->len++] = byte;
    if (++w->code == 0xFFu) {
        /* A full block of 254 data bytes: close it and open the next one. */
        w->out[w->code_pos] = w->code;
        emofuse__reserve_code(w);
    }
}

static inline void emofuse_writer_put_u8(emofuse_writer *w, uint8_t v)
{
    if (++w->payload_len > EMOFUSE_MAX_PAYLOAD_LEN - EMOFUSE_CRC_LEN) {
        w->failed = 1u;
        return;
    }
    w->crc = emofuse_crc32_update(w->crc, &v, 1u);
    emofuse__stuff(w, v);
}

static inline void emofuse_writer_put_u16(emofuse_writer *w, uint16_t v)
{
    emofuse_writer_put_u8(w, (uint8_t)(v & 0xFFu));
    emofuse_writer_put_u8(w, (uint8_t)(v >> 8));
}

static inline void emofuse_writer_put_u32(emofuse_writer *w, uint32_t v)
{
    emofuse_writer_put_u16(w, (uint16_t)(v & 0xFFFFu));
    emofuse_writer_put_u16(w, (uint16_t)(v >> 16));
}

static inline void emofuse_writer_put_u64(emofuse_writer *w, uint64_t v)
{
    emofuse_writer_put_u32(w, (uint32_t)(v & 0xFFFFFFFFu));
    emofuse_writer_put_u32(w, (uint32_t)(v >> 32));
}

static inline void emofuse_writer_put_f32(emofuse_writer *w, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    emofuse_writer_put_u32(w, bits);
}

static inline void emofuse_writer_put_bytes(emofuse_writer *w, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        emofuse_writer_put_u8(w, p[i]);
    }
}

/* Start a packet: writes the 13-byte header. */
static inline void emofuse_writer_begin(emofuse_writer *w, uint8_t *out, size_t cap, uint8_t msg_type,
                                        uint8_t stream_id, uint16_t seq, uint64_t t_us)
{
    w->out = out;
    w->cap = cap;
    w->len = 0u;
    w->code_pos = 0u;
    w->payload_len = 0u;
    w->crc = 0xFFFFFFFFu;
    w->code = 1u;
    w->failed = (out == NULL) ? 1u : 0u;
    if (!w->failed) {
        emofuse__reserve_code(w);
    }
    emofuse_writer_put_u8(w, (uint8_t)EMOFUSE_PROTO_VERSION);
    emofuse_writer_put_u8(w, msg_type);
    emofuse_writer_put_u8(w, stream_id);
    emofuse_writer_put_u16(w, seq);
    emofuse_writer_put_u64(w, t_us);
}

/* Append the CRC, close the COBS encoding and write the 0x00 delimiter.
 * Returns the packet length in bytes, or 0 when the buffer was too small or the payload
 * grew past EMOFUSE_MAX_PAYLOAD_LEN (nothing usable is in the buffer then). */
static inline size_t emofuse_writer_end(emofuse_writer *w)
{
    uint32_t crc = ~w->crc;
    int i;
    for (i = 0; i < 4; ++i) {
        emofuse__stuff(w, (uint8_t)(crc & 0xFFu));
        crc >>= 8;
    }
    if (w->failed || w->len >= w->cap) {
        return 0u;
    }
    w->out[w->code_pos] = w->code;
    w->out[w->len++] = 0u;
    return w->len;
}

/* ---- Message builders (device side) ---------------------------------------------------- */

static inline size_t emofuse__sample_size(uint8_t sample_type)
{
    switch (sample_type) {
    case EMOFUSE_SAMPLE_INT16: return 2u;
    case EMOFUSE_SAMPLE_INT32: return 4u;
    case EMOFUSE_SAMPLE_FLOAT32: return 4u;
    default: return 0u;
    }
}

/* A block of samples of one stream.
 *   samples: n_samples * channels values of the C type that sample_type names (int16_t,
 *            int32_t or float), interleaved: s0c0 s0c1 .. s0cN s1c0 ...
 *   t_us:    device time of the first sample, us since boot.
 * Returns the packet length, or 0 on a bad argument or a too-small buffer. */
static inline size_t emofuse_build_samples(uint8_t *out, size_t cap, uint8_t stream_id, uint16_t seq,
                                           uint64_t t_us, uint8_t sample_type, uint8_t channels,
                                           uint16_t n_samples, const void *samples)
{
    emofuse_writer w;
    const uint8_t *src = (const uint8_t *)samples;
    size_t size = emofuse__sample_size(sample_type);
    size_t count = (size_t)n_samples * channels;
    size_t i;
    if (size == 0u || channels == 0u || count * size > EMOFUSE_MAX_SAMPLE_BYTES ||
        (count > 0u && samples == NULL)) {
        return 0u;
    }
    emofuse_writer_begin(&w, out, cap, EMOFUSE_MSG_SAMPLES, stream_id, seq, t_us);
    emofuse_writer_put_u8(&w, sample_type);
    emofuse_writer_put_u8(&w, channels);
    emofuse_writer_put_u16(&w, n_samples);
    for (i = 0; i < count; ++i) {
        /* memcpy: the caller's array may not be aligned for the type, and this stays
         * correct on big-endian CPUs because the put functions write little-endian. */
        if (size == 2u) {
            int16_t v;
            memcpy(&v, src + i * size, sizeof v);
            emofuse_writer_put_u16(&w, (uint16_t)v);
        } else {
            uint32_t v;
            memcpy(&v, src + i * size, sizeof v);
            emofuse_writer_put_u32(&w, v);
        }
    }
    return emofuse_writer_end(&w);
}

static inline size_t emofuse_build_samples_i16(uint8_t *out, size_t cap, uint8_t stream_id, uint16_t seq,
                                               uint64_t t_us, uint8_t channels, uint16_t n_samples,
                                               const int16_t *samples)
{
    return emofuse_build_samples(out, cap, stream_id, seq, t_us, EMOFUSE_SAMPLE_INT16, channels, n_samples,
                                 samples);
}

static inline size_t emofuse_build_samples_i32(uint8_t *out, size_t cap, uint8_t stream_id, uint16_t seq,
                                               uint64_t t_us, uint8_t channels, uint16_t n_samples,
                                               const int32_t *samples)
{
    return emofuse_build_samples(out, cap, stream_id, seq, t_us, EMOFUSE_SAMPLE_INT32, channels, n_samples,
                                 samples);
}

static inline size_t emofuse_build_samples_f32(uint8_t *out, size_t cap, uint8_t stream_id, uint16_t seq,
                                               uint64_t t_us, uint8_t channels, uint16_t n_samples,
                                               const float *samples)
{
    return emofuse_build_samples(out, cap, stream_id, seq, t_us, EMOFUSE_SAMPLE_FLOAT32, channels, n_samples,
                                 samples);
}

/* One stream of a device: physical value = raw * gain + offset, in units. */
typedef struct {
    uint8_t stream_id;
    uint8_t sample_type; /* enum emofuse_sample_type */
    uint8_t channels;
    uint32_t rate_mhz;   /* nominal rate in millihertz: 250 Hz -> 250000 */
    float gain;
    float offset;
    const char *units;   /* NUL-terminated UTF-8, at most EMOFUSE_MAX_UNITS_BYTES bytes */
} emofuse_stream_info;

typedef struct {
    uint8_t fw_major, fw_minor, fw_patch;
    uint32_t device_id;  /* serial number */
    const char *name;    /* NUL-terminated UTF-8, at most EMOFUSE_MAX_NAME_BYTES bytes */
    const emofuse_stream_info *streams;
    uint8_t n_streams;
} emofuse_device_info;

/* Length of a NUL-terminated string, or max + 1 when it is longer than max. */
static inline size_t emofuse__bounded_strlen(const char *s, size_t max)
{
    size_t n = 0u;
    if (s == NULL) {
        return 0u;
    }
    while (n <= max && s[n] != '\0') {
        ++n;
    }
    return n;
}

static inline void emofuse__put_text(emofuse_writer *w, const char *s, size_t n)
{
    emofuse_writer_put_u8(w, (uint8_t)n);
    emofuse_writer_put_bytes(w, (const uint8_t *)s, n);
}

/* The device-info message (header stream id 0). Send it after boot, on GET_INFO and after
 * every successful SET_RATE. Returns the packet length, or 0 on a bad argument or a
 * too-small buffer (EMOFUSE_DEVICE_INFO_PACKET_LEN(n) bytes always suffice). */
static inline size_t emofuse_build_device_info(uint8_t *out, size_t cap, uint16_t seq, uint64_t t_us,
                                               const emofuse_device_info *info)
{
    emofuse_writer w;
    size_t name_len, i;
    if (info == NULL || (info->n_streams > 0u && info->streams == NULL)) {
        return 0u;
    }
    name_len = emofuse__bounded_strlen(info->name, EMOFUSE_MAX_NAME_BYTES);
    if (name_len > EMOFUSE_MAX_NAME_BYTES) {
        return 0u;
    }
    emofuse_writer_begin(&w, out, cap, EMOFUSE_MSG_DEVICE_INFO, EMOFUSE_STREAM_NONE, seq, t_us);
    emofuse_writer_put_u8(&w, info->fw_major);
    emofuse_writer_put_u8(&w, info->fw_minor);
    emofuse_writer_put_u8(&w, info->fw_patch);
    emofuse_writer_put_u32(&w, info->device_id);
    emofuse__put_text(&w, info->name, name_len);
    emofuse_writer_put_u8(&w, info->n_streams);
    for (i = 0; i < info->n_streams; ++i) {
        const emofuse_stream_info *s = &info->streams[i];
        size_t units_len = emofuse__bounded_strlen(s->units, EMOFUSE_MAX_UNITS_BYTES);
        if (units_len > EMOFUSE_MAX_UNITS_BYTES || s->channels == 0u || emofuse__sample_size(s->sample_type) == 0u) {
            return 0u;
        }
        emofuse_writer_put_u8(&w, s->stream_id);
        emofuse_writer_put_u8(&w, s->sample_type);
        emofuse_writer_put_u8(&w, s->channels);
        emofuse_writer_put_u32(&w, s->rate_mhz);
        emofuse_writer_put_f32(&w, s->gain);
        emofuse_writer_put_f32(&w, s->offset);
        emofuse__put_text(&w, s->units, units_len);
    }
    return emofuse_writer_end(&w);
}

/* An answer to a command: echo its opcode, stream id and seq. detail may be NULL or "";
 * a longer one is cut to at most EMOFUSE_MAX_DETAIL_BYTES bytes, at a UTF-8 character
 * boundary (a cut inside a character would make the host reject the whole ack). */
static inline size_t emofuse_build_ack(uint8_t *out, size_t cap, uint8_t opcode, uint8_t stream_id, uint16_t seq,
                                       uint64_t t_us, uint8_t status, const char *detail)
{
    emofuse_writer w;
    size_t n = emofuse__bounded_strlen(detail, EMOFUSE_MAX_DETAIL_BYTES);
    if (n > EMOFUSE_MAX_DETAIL_BYTES) {
        n = EMOFUSE_MAX_DETAIL_BYTES;  /* a shortened reason beats no answer */
        while (n > 0u && ((uint8_t)detail[n] & 0xC0u) == 0x80u) {
            --n;  /* detail[n] continues a character that would be cut: drop it whole */
        }
    }
    emofuse_writer_begin(&w, out, cap, EMOFUSE_MSG_ACK, stream_id, seq, t_us);
    emofuse_writer_put_u8(&w, opcode);
    emofuse_writer_put_u8(&w, status);
    emofuse__put_text(&w, detail, n);
    return emofuse_writer_end(&w);
}

/* A host-to-device command (for host tools written in C, and for tests). rate_mhz is the new
 * rate for EMOFUSE_OP_SET_RATE and 0 otherwise. */
static inline size_t emofuse_build_command(uint8_t *out, size_t cap, uint8_t opcode, uint8_t stream_id,
                                           uint16_t seq, uint64_t t_us, uint32_t rate_mhz)
{
    emofuse_writer w;
    emofuse_writer_begin(&w, out, cap, EMOFUSE_MSG_COMMAND, stream_id, seq, t_us);
    emofuse_writer_put_u8(&w, opcode);
    emofuse_writer_put_u32(&w, rate_mhz);
    return emofuse_writer_end(&w);
}

/* ---- Receiving host commands (device side) --------------------------------------------- */

/* Decode one COBS frame (delimiter removed). in == out is allowed: the decoded bytes never
 * overtake the encoded ones. Returns EMOFUSE_OK and sets *out_len, or EMOFUSE_ERR_COBS /
 * EMOFUSE_ERR_LENGTH (output would not fit in cap). */
static inline int emofuse_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    size_t i = 0u, o = 0u;
    if (len == 0u) {
        return EMOFUSE_ERR_COBS;
    }
    while (i < len) {
        size_t code = in[i];
        size_t end = i + code;
        if (code == 0u || end > len) {
            return EMOFUSE_ERR_COBS;
        }
        for (++i; i < end; ++i) {
            if (o >= cap) {
                return EMOFUSE_ERR_LENGTH;
            }
            out[o++] = in[i];
        }
        if (code != 0xFFu && i < len) {
            if (o >= cap) {
                return EMOFUSE_ERR_LENGTH;
            }
            out[o++] = 0u;
        }
    }
    *out_len = o;
    return EMOFUSE_OK;
}

static inline uint16_t emofuse_get_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

static inline uint32_t emofuse_get_u32(const uint8_t *p)
{
    return (uint32_t)emofuse_get_u16(p) | ((uint32_t)emofuse_get_u16(p + 2) << 16);
}

static inline uint64_t emofuse_get_u64(const uint8_t *p)
{
    return (uint64_t)emofuse_get_u32(p) | ((uint64_t)emofuse_get_u32(p + 4) << 32);
}

typedef struct {
    uint8_t opcode;    /* enum emofuse_opcode; answer unknown ones with STATUS_UNKNOWN_OPCODE */
    uint8_t stream_id; /* a stream, EMOFUSE_STREAM_ALL, or EMOFUSE_STREAM_NONE */
    uint16_t seq;      /* echo it in the ack */
    uint64_t t_us;     /* host time, informative */
    uint32_t rate_mhz; /* SET_RATE only */
} emofuse_command;

/* Check a decoded payload (header + body + CRC) and read the command in it. */
static inline int emofuse_parse_command_payload(const uint8_t *p, size_t len, emofuse_command *cmd)
{
    if (len < 1u + EMOFUSE_CRC_LEN || len > EMOFUSE_MAX_PAYLOAD_LEN) {
        return EMOFUSE_ERR_LENGTH;
    }
    if (emofuse_crc32(p, len - EMOFUSE_CRC_LEN) != emofuse_get_u32(p + len - EMOFUSE_CRC_LEN)) {
        return EMOFUSE_ERR_CRC;
    }
    if (p[0] != EMOFUSE_PROTO_VERSION) {
        return EMOFUSE_ERR_VERSION;
    }
    if (len < EMOFUSE_MIN_PAYLOAD_LEN) {
        return EMOFUSE_ERR_LENGTH;
    }
    if (p[1] != EMOFUSE_MSG_COMMAND) {
        return EMOFUSE_ERR_TYPE;
    }
    if (len != EMOFUSE_COMMAND_PAYLOAD_LEN) {
        return EMOFUSE_ERR_LENGTH;
    }
    cmd->stream_id = p[2];
    cmd->seq = emofuse_get_u16(p + 3);
    cmd->t_us = emofuse_get_u64(p + 5);
    cmd->opcode = p[13];
    cmd->rate_mhz = emofuse_get_u32(p + 14);
    return EMOFUSE_OK;
}

/* Decode (in place) and parse one received frame, delimiter removed. */
static inline int emofuse_parse_command(uint8_t *frame, size_t len, emofuse_command *cmd)
{
    size_t n = 0u;
    int rc = emofuse_cobs_decode(frame, len, frame, len, &n);
    if (rc != EMOFUSE_OK) {
        return rc;
    }
    return emofuse_parse_command_payload(frame, n, cmd);
}

/* Byte-at-a-time command receiver, sized for the largest command frame. A longer run without
 * a 0x00 cannot be a command: it is dropped up to the next 0x00. */
#define EMOFUSE_RX_CAP EMOFUSE_COBS_MAX_LEN(EMOFUSE_COMMAND_PAYLOAD_LEN)
#define EMOFUSE_RX_NONE 0    /* no frame completed yet (or an empty frame) */
#define EMOFUSE_RX_COMMAND 1 /* *cmd holds a valid command */

typedef struct {
    uint8_t buf[EMOFUSE_RX_CAP];
    size_t len;
    uint8_t overflow;
} emofuse_rx;

static inline void emofuse_rx_init(emofuse_rx *rx)
{
    rx->len = 0u;
    rx->overflow = 0u;
}

/* Feed one received byte. Returns EMOFUSE_RX_NONE, EMOFUSE_RX_COMMAND (cmd filled), or a
 * negative enum emofuse_result for a frame that ended but was not a valid command. */
static inline int emofuse_rx_push(emofuse_rx *rx, uint8_t byte, emofuse_command *cmd)
{
    int rc;
    if (byte != 0u) {
        if (rx->len < EMOFUSE_RX_CAP) {
            rx->buf[rx->len++] = byte;
        } else {
            rx->overflow = 1u;
        }
        return EMOFUSE_RX_NONE;
    }
    if (rx->overflow) {
        rc = EMOFUSE_ERR_LENGTH;
    } else if (rx->len == 0u) {
        rc = EMOFUSE_RX_NONE;
    } else {
        rc = emofuse_parse_command(rx->buf, rx->len, cmd);
        if (rc == EMOFUSE_OK) {
            rc = EMOFUSE_RX_COMMAND;
        }
    }
    emofuse_rx_init(rx);
    return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* EMOFUSE_PROTO_H */
