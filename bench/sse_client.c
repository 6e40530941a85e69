/* Fan-out receiver for the benchmark: S connections on one epoll loop.
 *
 * usage: sse_client MODE HOST PORT PATH[,PATH...] S WARMUP_MS DURATION_MS SAMPLE_EVERY
 *   Connection i takes the (i mod n)-th of the n comma-separated paths.
 *   MODE sse: GET PATH, count the events in the body: "\n\n" boundaries (ignoring
 *             \r) ending an event with a field, so a ": ping" comment is none;
 *             de-chunked first when the response is chunked (uvicorn's streams
 *             are: each chunk's trailing CRLF would otherwise read as one more
 *             boundary, counting a stream that writes one event per chunk twice).
 *   MODE output: as sse, and also count the output chunks the events carry (each
 *             chunk on the wire has one "offset": key; nothing else on a job's
 *             stream has it).
 *   MODE ws:  WebSocket handshake on PATH, send {"type":"subscribe","all":true}
 *             ({"type":"subscribe","jobId":"ID"} for a PATH ending in #ID),
 *             walk the server frames and count the job messages in their payloads
 *             ("type":"job"), so a batch frame counts every message it carries.
 * Prints "READY" once every connection has its response head, then counts for
 * WARMUP_MS (discarded) + DURATION_MS and prints one JSON line. Connections
 * whose index is a multiple of SAMPLE_EVERY also parse the publisher's stamp
 * ("bench_t":<ns since epoch>) of every message for publish->receive latency.
 * Both patterns are matched byte by byte with their state kept per connection,
 * so one cut by a read() boundary still counts.
 * Written in C so the receiving side is never the bottleneck.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_LAT 2000000
/* Handshakes in flight at once; the next connection opens as one gets its head.
 * A fleet connects over time: a storm of S at once measures something else, and
 * a server may refuse it (Jobcast on Redis answered 503 past redis-py's pool of 100). */
#define MAX_PENDING 64
/* In a pattern, a space stands for any run of spaces: json.dumps writes ": ". */
#define STAMP "\"bench_t\":"
#define JOB_MESSAGE "\"type\": \"job\""
#define CHUNK "\"offset\":"

typedef struct {
    int fd;
    int ready;       /* response head received */
    char last;       /* last byte seen, for "\n\n" across reads (sse) */
    int has_field;   /* sse: the event being read has a line other than a comment */
    int chunk_matched; /* output: bytes of CHUNK matched so far */
    int hdr_need;    /* ws: header bytes still to read (0 = in payload) */
    unsigned char hdr[14];
    int hdr_have;
    uint64_t payload_left;
    int sampled;
    int job_matched;   /* bytes of JOB_MESSAGE matched so far */
    int stamp_matched; /* bytes of STAMP matched so far */
    int stamp_digits;  /* digits of the stamp's value read so far */
    int64_t stamp;
    int chunked;          /* sse: Transfer-Encoding: chunked */
    int chunk_state;      /* sse, chunked: CHUNK_SIZE, CHUNK_DATA or CHUNK_END */
    int chunk_size_done;  /* the size line's hex digits have ended (extension, \r) */
    uint64_t chunk_left;  /* data bytes left in this chunk (or its size, being read) */
} conn_t;

enum { CHUNK_SIZE, CHUNK_DATA, CHUNK_END };

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* This process's CPU seconds: it reports its own, as it exits right after the window. */
static double cpu_now(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t *lat;
static long n_lat;
static long events;
static long chunks; /* output chunks (MODE output) */
static int output;  /* MODE output */
static int counting;

/* One byte more of a pattern match: the new number of pattern bytes matched.
 * On a mismatch the match restarts at this byte. The patterns start with '"'
 * and repeat no longer prefix, so in valid JSON (where a quote closing a partial
 * match cannot also open "type", "offset" or "bench_t") no occurrence is missed;
 * inside a JSON string a quote is escaped, so no string's text can match. */
static int match_step(const char *pattern, int matched, char byte) {
    if (pattern[matched] == ' ') {
        if (byte == ' ') return matched;
        matched++;
    }
    if (byte == pattern[matched]) return matched + 1;
    return byte == pattern[0] ? 1 : 0;
}

static long count_messages(conn_t *c, const char *p, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) {
        c->job_matched = match_step(JOB_MESSAGE, c->job_matched, p[i]);
        if (JOB_MESSAGE[c->job_matched] == '\0') {
            k++;
            c->job_matched = 0;
        }
    }
    return k;
}

/* Latency samples for every stamp in p; a stamp finished in a later read is
 * timed at that read (t), microseconds after its first bytes came. */
static void sample_stamps(conn_t *c, const char *p, size_t n, int64_t t) {
    for (size_t i = 0; i < n; i++) {
        char byte = p[i];
        if (STAMP[c->stamp_matched] != '\0') {
            c->stamp_matched = match_step(STAMP, c->stamp_matched, byte);
        } else if (byte >= '0' && byte <= '9') {
            c->stamp = c->stamp * 10 + (byte - '0');
            c->stamp_digits++;
        } else if (byte != ' ' || c->stamp_digits > 0) {
            if (c->stamp_digits > 0 && counting && n_lat < MAX_LAT) lat[n_lat++] = t - c->stamp;
            c->stamp_matched = match_step(STAMP, 0, byte);
            c->stamp_digits = 0;
            c->stamp = 0;
        }
    }
}

static void count_sse(conn_t *c, const char *p, size_t n) {
    long k = 0, m = 0;
    char prev = c->last; /* 0 at the body's start: a line starts there too */
    for (size_t i = 0; i < n; i++) {
        char b = p[i];
        if (b == '\r') continue; /* sse-starlette ends lines with \r\n */
        if (b == '\n' && prev == '\n') {
            k += c->has_field;
            c->has_field = 0;
        } else if ((prev == '\n' || prev == 0) && b != '\n' && b != ':') {
            c->has_field = 1;
        }
        if (output) {
            c->chunk_matched = match_step(CHUNK, c->chunk_matched, b);
            if (CHUNK[c->chunk_matched] == '\0') {
                m++;
                c->chunk_matched = 0;
            }
        }
        prev = b;
    }
    c->last = prev;
    if (counting) {
        events += k;
        chunks += m;
    }
}

/* The body bytes in p: counted and sampled as they are, or first de-chunked
 * (size line, data, CRLF) with the state kept per connection across reads. */
static void take_sse(conn_t *c, const char *p, size_t n, int64_t t) {
    size_t i = 0;
    while (i < n) {
        if (!c->chunked || c->chunk_state == CHUNK_DATA) {
            size_t take = n - i;
            if (c->chunked && take > c->chunk_left) take = (size_t)c->chunk_left;
            count_sse(c, p + i, take);
            if (c->sampled) sample_stamps(c, p + i, take, t);
            i += take;
            if (c->chunked && (c->chunk_left -= take) == 0) c->chunk_state = CHUNK_END;
            continue;
        }
        char b = p[i++];
        if (c->chunk_state == CHUNK_END) {
            if (b == '\n') c->chunk_state = CHUNK_SIZE;
        } else if (b == '\n') {
            c->chunk_state = c->chunk_left > 0 ? CHUNK_DATA : CHUNK_SIZE; /* 0: the last */
            c->chunk_size_done = 0;
        } else if (!c->chunk_size_done) {
            int digit = b >= '0' && b <= '9'   ? b - '0'
                        : b >= 'a' && b <= 'f' ? b - 'a' + 10
                        : b >= 'A' && b <= 'F' ? b - 'A' + 10
                                               : -1;
            if (digit < 0)
                c->chunk_size_done = 1;
            else
                c->chunk_left = c->chunk_left * 16 + (uint64_t)digit;
        }
    }
}

/* Walks server frames (unmasked): 2-byte head, extended length, payload; only
 * payload bytes are searched for messages and stamps. */
static void count_ws(conn_t *c, const unsigned char *p, size_t n, int64_t t) {
    size_t i = 0;
    while (i < n) {
        if (c->payload_left > 0) {
            size_t take = n - i < c->payload_left ? n - i : (size_t)c->payload_left;
            long k = count_messages(c, (const char *)p + i, take);
            if (counting) events += k;
            if (c->sampled) sample_stamps(c, (const char *)p + i, take, t);
            c->payload_left -= take;
            i += take;
            continue;
        }
        c->hdr[c->hdr_have++] = p[i++];
        if (c->hdr_have == 2) {
            int len7 = c->hdr[1] & 0x7f;
            c->hdr_need = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
        }
        if (c->hdr_have >= 2 && c->hdr_have == c->hdr_need) {
            int len7 = c->hdr[1] & 0x7f;
            uint64_t len = (uint64_t)len7;
            if (len7 == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
            if (len7 == 127) {
                len = 0;
                for (int k = 2; k < 10; k++) len = (len << 8) | c->hdr[k];
            }
            c->payload_left = len;
            c->hdr_have = 0;
            c->hdr_need = 0;
        }
    }
}

static int open_conn(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Opens connection i and waits for it to take its request. */
static int open_at(conn_t *conns, int i, int ep, const char *host, int port) {
    conns[i].fd = open_conn(host, port);
    if (conns[i].fd < 0) {
        fprintf(stderr, "connect %d failed: %s\n", i, strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
    return epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
}

static int build_request(char *out, size_t cap, int ws, const char *host, int port,
                         const char *path) {
    if (ws)
        return snprintf(out, cap,
                        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        path, host, port);
    return snprintf(out, cap,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n",
                    path, host, port);
}

/* A masked client text frame (mask 0) subscribing to every job, or to job_id's. */
static int ws_subscribe_frame(unsigned char *out, const char *job_id) {
    char msg[120];
    int n = job_id ? snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"jobId\":\"%s\"}", job_id)
                   : snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"all\":true}");
    if (n <= 0 || n >= 126) return -1; /* one short frame */
    out[0] = 0x81;
    out[1] = (unsigned char)(0x80 | n);
    memset(out + 2, 0, 4); /* a zero mask leaves the payload as is */
    memcpy(out + 6, msg, (size_t)n);
    return n + 6;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr,
                "usage: %s MODE HOST PORT PATH[,PATH...] S WARMUP_MS DURATION_MS SAMPLE_EVERY\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]), s = atoi(argv[5]), sample_every = atoi(argv[8]);
    int64_t warmup = atoll(argv[6]), duration = atoll(argv[7]);
    int ws = strcmp(mode, "ws") == 0;
    output = strcmp(mode, "output") == 0;
    if (!ws && !output && strcmp(mode, "sse") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    /* The paths, split in place at the commas. */
    int n_paths = 1;
    for (char *q = argv[4]; *q; q++) n_paths += *q == ',';
    char **paths = malloc(sizeof(char *) * (size_t)n_paths);
    paths[0] = argv[4];
    for (int k = 1; k < n_paths; k++) {
        char *comma = strchr(paths[k - 1], ',');
        *comma = '\0';
        paths[k] = comma + 1;
    }
    /* A WebSocket path's fragment names the job to subscribe to (fragments are not sent). */
    char **jobs = calloc((size_t)n_paths, sizeof(char *));
    for (int k = 0; k < n_paths; k++) {
        char *hash = strchr(paths[k], '#');
        if (hash) {
            *hash = '\0';
            jobs[k] = hash + 1;
        }
    }
    lat = malloc(sizeof(int64_t) * MAX_LAT);
    conn_t *conns = calloc((size_t)s, sizeof(conn_t));
    int ep = epoll_create1(0);
    char req[1024];
    unsigned char sub[132];

    for (int i = 0; i < s; i++) conns[i].sampled = sample_every > 0 && i % sample_every == 0;
    int opened = 0;
    while (opened < s && opened < MAX_PENDING)
        if (open_at(conns, opened++, ep, host, port) < 0) return 1;

    static char buf[BUF];
    struct epoll_event evs[512];
    int n_ready = 0, sent = 0;
    double cpu_start = 0;
    int64_t deadline_connect = mono_ms() + 60000, t_start = 0, t_end = 0, t_count = 0;
    /* Bounded: the connect phase gives up after 60 s, the count phase ends on time. */
    for (;;) {
        int64_t now = mono_ms();
        if (!t_start && now > deadline_connect) {
            fprintf(stderr, "only %d of %d connections ready\n", n_ready, s);
            return 1;
        }
        if (t_start && !counting && now >= t_start + warmup) {
            counting = 1;
            t_count = now;
            cpu_start = cpu_now();
        }
        if (t_start && now >= t_end) break;
        int n = epoll_wait(ep, evs, 512, 50);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            if ((evs[k].events & EPOLLOUT) && sent < s + 1) {
                /* Loopback sockets take the whole short request at once. */
                const char *path = paths[evs[k].data.u32 % (uint32_t)n_paths];
                int req_len = build_request(req, sizeof req, ws, host, port, path);
                if (req_len <= 0 || req_len >= (int)sizeof req) return 1;
                if (write(c->fd, req, (size_t)req_len) != req_len) return 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                sent++;
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = read(c->fd, buf, BUF);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "connection closed by server\n");
                return 1;
            }
            char *p = buf;
            size_t len = (size_t)r;
            if (!c->ready) {
                char *head_end = memmem(buf, len, "\r\n\r\n", 4);
                if (!head_end) continue; /* heads are small: they arrive in one read */
                /* A refused stream (a 503, say) must not pass for a silent subscriber. */
                const char *want = ws ? "HTTP/1.1 101" : "HTTP/1.1 200";
                if (memcmp(buf, want, strlen(want)) != 0) {
                    int line = (int)strcspn(buf, "\r");
                    fprintf(stderr, "connection %u: %.*s\n", evs[k].data.u32, line, buf);
                    return 1;
                }
                c->ready = 1;
                char head[4096];
                size_t head_len = (size_t)(head_end - buf);
                if (head_len >= sizeof head) head_len = sizeof head - 1;
                memcpy(head, buf, head_len);
                head[head_len] = '\0';
                c->chunked = strcasestr(head, "\r\ntransfer-encoding: chunked") != NULL;
                if (opened < s && open_at(conns, opened++, ep, host, port) < 0) return 1;
                if (++n_ready == s) {
                    printf("READY\n");
                    fflush(stdout);
                    t_start = mono_ms();
                    t_end = t_start + warmup + duration;
                }
                if (ws) {
                    int sub_len = ws_subscribe_frame(sub, jobs[evs[k].data.u32 % (uint32_t)n_paths]);
                    if (sub_len < 0 || write(c->fd, sub, (size_t)sub_len) != sub_len) return 1;
                }
                p = head_end + 4;
                len -= (size_t)(p - buf);
            }
            int64_t t = c->sampled ? now_ns() : 0;
            if (ws) {
                count_ws(c, (unsigned char *)p, len, t);
            } else {
                take_sse(c, p, len, t);
            }
        }
    }
    double secs = (double)(t_end - t_count) / 1000.0, cpu = cpu_now() - cpu_start;
    qsort(lat, (size_t)n_lat, sizeof(int64_t), cmp_i64);
    double p50 = n_lat ? lat[n_lat / 2] / 1e6 : -1, p99 = n_lat ? lat[n_lat * 99 / 100] / 1e6 : -1;
    printf("{\"events\": %ld, \"chunks\": %ld, \"seconds\": %.3f, \"samples\": %ld, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"cpu_s\": %.3f}\n",
           events, chunks, secs, n_lat, p50, p99, cpu);
    return 0;
}
