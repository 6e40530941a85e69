/* Fan-out receiver for the benchmark: S connections on one epoll loop.
 *
 * usage: sse_client MODE HOST PORT PATH S WARMUP_MS DURATION_MS SAMPLE_EVERY
 *   MODE sse: GET PATH, count "\n\n" event boundaries (ignoring \r).
 *   MODE ws:  WebSocket handshake on PATH, send {"type":"subscribe","all":true},
 *             count server frames.
 * Prints "READY" once every connection has its response head, then counts for
 * WARMUP_MS (discarded) + DURATION_MS and prints one JSON line. Connections
 * whose index is a multiple of SAMPLE_EVERY also parse the publisher's stamp
 * ("bench_t":<ns since epoch>) for publish->receive latency.
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
#define STAMP "\"bench_t\":"

typedef struct {
    int fd;
    int ready;       /* response head received */
    char last;       /* last byte seen, for "\n\n" across reads (sse) */
    int hdr_need;    /* ws: header bytes still to read (0 = in payload) */
    unsigned char hdr[14];
    int hdr_have;
    uint64_t payload_left;
    int sampled;
} conn_t;

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
static int counting;

static void sample_stamps(const char *p, size_t n, int64_t t) {
    const char *end = p + n;
    while (p < end && n_lat < MAX_LAT) {
        const char *hit = memmem(p, (size_t)(end - p), STAMP, sizeof(STAMP) - 1);
        if (!hit) return;
        hit += sizeof(STAMP) - 1;
        while (hit < end && *hit == ' ') hit++; /* json.dumps writes ": " */
        int64_t v = 0;
        while (hit < end && *hit >= '0' && *hit <= '9') v = v * 10 + (*hit++ - '0');
        if (hit < end && v > 0) lat[n_lat++] = t - v; /* skip stamps cut by the read */
        p = hit;
    }
}

static void count_sse(conn_t *c, const char *p, size_t n) {
    long k = 0;
    char prev = c->last;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') continue; /* sse-starlette ends lines with \r\n */
        if (p[i] == '\n' && prev == '\n') k++;
        prev = p[i];
    }
    c->last = prev;
    if (counting) events += k;
}

/* Walks server frames (unmasked): 2-byte head, extended length, payload. */
static void count_ws(conn_t *c, const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (c->payload_left > 0) {
            size_t take = n - i < c->payload_left ? n - i : (size_t)c->payload_left;
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
            if (counting) events++;
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

static int build_request(char *out, size_t cap, const char *mode, const char *host, int port,
                         const char *path) {
    if (strcmp(mode, "ws") == 0)
        return snprintf(out, cap,
                        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        path, host, port);
    return snprintf(out, cap,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n",
                    path, host, port);
}

/* A masked client text frame carrying {"type":"subscribe","all":true} (mask 0). */
static int ws_subscribe_frame(unsigned char *out) {
    static const char msg[] = "{\"type\":\"subscribe\",\"all\":true}";
    int n = (int)sizeof(msg) - 1;
    out[0] = 0x81;
    out[1] = (unsigned char)(0x80 | n);
    memset(out + 2, 0, 4); /* a zero mask leaves the payload as is */
    memcpy(out + 6, msg, (size_t)n);
    return n + 6;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s MODE HOST PORT PATH S WARMUP_MS DURATION_MS SAMPLE_EVERY\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1], *host = argv[2], *path = argv[4];
    int port = atoi(argv[3]), s = atoi(argv[5]), sample_every = atoi(argv[8]);
    int64_t warmup = atoll(argv[6]), duration = atoll(argv[7]);
    int ws = strcmp(mode, "ws") == 0;
    lat = malloc(sizeof(int64_t) * MAX_LAT);
    conn_t *conns = calloc((size_t)s, sizeof(conn_t));
    int ep = epoll_create1(0);
    char req[512];
    int req_len = build_request(req, sizeof req, mode, host, port, path);
    unsigned char sub[64];
    int sub_len = ws_subscribe_frame(sub);

    for (int i = 0; i < s; i++) {
        conns[i].fd = open_conn(host, port);
        conns[i].sampled = sample_every > 0 && i % sample_every == 0;
        if (conns[i].fd < 0) {
            fprintf(stderr, "connect %d failed: %s\n", i, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }

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
                c->ready = 1;
                if (++n_ready == s) {
                    printf("READY\n");
                    fflush(stdout);
                    t_start = mono_ms();
                    t_end = t_start + warmup + duration;
                }
                if (ws && write(c->fd, sub, (size_t)sub_len) != sub_len) return 1;
                p = head_end + 4;
                len -= (size_t)(p - buf);
            }
            if (ws)
                count_ws(c, (unsigned char *)p, len);
            else
                count_sse(c, p, len);
            if (counting && c->sampled) sample_stamps(p, len, now_ns());
        }
    }
    double secs = (double)(t_end - t_count) / 1000.0, cpu = cpu_now() - cpu_start;
    qsort(lat, (size_t)n_lat, sizeof(int64_t), cmp_i64);
    double p50 = n_lat ? lat[n_lat / 2] / 1e6 : -1, p99 = n_lat ? lat[n_lat * 99 / 100] / 1e6 : -1;
    printf("{\"events\": %ld, \"seconds\": %.3f, \"samples\": %ld, \"p50_ms\": %.3f, "
           "\"p99_ms\": %.3f, \"cpu_s\": %.3f}\n",
           events, secs, n_lat, p50, p99, cpu);
    return 0;
}
