/*
 * ICAP REQMOD load generator for the Clearance benchmark (bench/run.py builds and drives it).
 *
 * K persistent connections over epoll, each with exactly one request outstanding; every response is read
 * completely (ICAP head to CRLFCRLF, then the encapsulated headers and, when Encapsulated names a body, the
 * chunked body to its zero chunk). No sleeps anywhere: the next request goes out as soon as the previous
 * answer is complete (closed loop), or at its scheduled time (open loop, latency measured from the scheduled
 * time so a slow server cannot hide its queue: no coordinated omission).
 *
 *   loadgen --port P --service S --urls FILE [--connections K] [--duration T] [--warmup W]
 *           [--rate R] [--check OUT]
 *
 * --rate 0 (default) is closed loop. --check OUT sends every URL once, in order, and writes one status code
 * per line to OUT (0 for no answer). Prints MEASURE_START / MEASURE_END lines (so the caller can sample CPU)
 * and then one JSON object. Loopback only; every mode stops by itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define READ_CHUNK 65536
#define DRAIN_NS 2000000000ULL /* open loop: wait at most this long for answers after the window */
#define CHECK_LIMIT_NS 60000000000ULL

typedef struct {
    char *data;
    size_t len;
} request_t;

enum { IDLE, SENDING, RECEIVING, DEAD };

typedef struct {
    int fd;
    int state;
    const request_t *req;
    long url_index;
    size_t sent;
    uint64_t t_base; /* send time (closed loop) or scheduled time (open loop), ns */
    int in_window;
    char *buf;
    size_t len, cap;
    size_t head_scan;
    size_t head_end; /* 0 until the ICAP head is complete */
    size_t body_pos; /* next chunk-size line, when a body is expected */
    size_t need;     /* total bytes when there is no body */
    int has_body;
    int status;
    int close_after;
    int wants_out; /* EPOLLOUT registered: a request did not fit in the socket buffer */
} conn_t;

static struct {
    int port;
    const char *service;
    const char *urls_path;
    int connections;
    double duration, warmup, rate;
    const char *check_path;
} opt = {0, "reqmod", NULL, 32, 10.0, 2.0, 0.0, NULL};

static request_t *requests;
static long n_requests;
static conn_t conns[MAX_CONNS];
static int epfd;

static uint64_t *lat;
static size_t n_lat, cap_lat;
static long completed, errors, s204, s200, s_other, reconnects, unfinished;
static char first_error[200];
static int *check_status;
static uint64_t window_start, window_end;
static int counted_by_send_time; /* open loop and check: by scheduled/send time; closed loop: by completion */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void note_error(const char *what) {
    errors++;
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s", what);
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

/* ---- workload -------------------------------------------------------------------------------- */

static void build_requests(void) {
    FILE *f = fopen(opt.urls_path, "r");
    if (!f)
        die("cannot open the URL file");
    char line[8192];
    long cap = 1024;
    requests = malloc(sizeof(request_t) * cap);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        const char *p = strstr(line, "://");
        if (!p)
            die("URL without a scheme in the URL file");
        const char *host = p + 3;
        size_t host_len = strcspn(host, "/:?");
        char http[9000];
        int http_len = snprintf(http, sizeof http,
                                "GET %s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) "
                                "Gecko/20100101 Firefox/128.0\r\nAccept: text/html,*/*;q=0.8\r\n"
                                "Accept-Language: en-GB,zh-HK;q=0.7\r\n\r\n",
                                line, (int)host_len, host);
        long i = n_requests;
        char icap[10000];
        int icap_len = snprintf(icap, sizeof icap,
                                "REQMOD icap://127.0.0.1:%d/%s ICAP/1.0\r\nHost: 127.0.0.1:%d\r\n"
                                "Encapsulated: req-hdr=0, null-body=%d\r\nPreview: 0\r\nAllow: 204, trailers\r\n"
                                "X-Client-IP: 10.%ld.%ld.%ld\r\nX-Client-Username: user%03ld\r\n\r\n%s",
                                opt.port, opt.service, opt.port, http_len, 1 + (i / 65536) % 250, (i / 256) % 256,
                                1 + i % 250, i % 500, http);
        if (n_requests == cap) {
            cap *= 2;
            requests = realloc(requests, sizeof(request_t) * cap);
        }
        requests[n_requests].data = malloc(icap_len);
        memcpy(requests[n_requests].data, icap, icap_len);
        requests[n_requests].len = icap_len;
        n_requests++;
    }
    fclose(f);
    if (!n_requests)
        die("the URL file is empty");
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_open(conn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        c->state = DEAD;
        note_error("connect failed");
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->wants_out = 0;
    c->state = IDLE;
    c->len = 0;
}

static void conn_reset(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    reconnects++;
    conn_open(c);
}

static void want_write(conn_t *c, int on) {
    if (c->wants_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->wants_out = on;
}

static void conn_flush(conn_t *c) {
    while (c->sent < c->req->len) {
        ssize_t n = write(c->fd, c->req->data + c->sent, c->req->len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN) {
                want_write(c, 1);
                return;
            }
            note_error("write failed");
            conn_reset(c);
            return;
        }
        c->sent += (size_t)n;
    }
    if (c->state == SENDING) {
        c->state = RECEIVING;
        want_write(c, 0);
    }
}

static void conn_send(conn_t *c, long url_index, uint64_t t_base, int in_window) {
    c->req = &requests[url_index % n_requests];
    c->url_index = url_index;
    c->sent = 0;
    c->t_base = t_base;
    c->in_window = in_window;
    c->len = c->head_scan = c->head_end = c->body_pos = c->need = 0;
    c->has_body = c->status = c->close_after = 0;
    c->state = SENDING;
    conn_flush(c);
}

/* ---- response parsing ------------------------------------------------------------------------ */

static long header_value_offset(const char *head, size_t len, const char *key) {
    /* Offset of `key=` inside the Encapsulated header value, or -1. */
    const char *p = head;
    const char *end = head + len;
    while (p < end) {
        const char *eol = memmem(p, end - p, "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 13 && strncasecmp(p, "Encapsulated:", 13) == 0) {
            const char *hit = memmem(p, eol - p, key, strlen(key));
            if (hit)
                return strtol(hit + strlen(key), NULL, 10);
            return -1;
        }
        p = eol + 2;
    }
    return -1;
}

static int has_connection_close(const char *head, size_t len) {
    const char *p = head;
    const char *end = head + len;
    while (p < end) {
        const char *eol = memmem(p, end - p, "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 11 && strncasecmp(p, "Connection:", 11) == 0 && memmem(p, eol - p, "close", 5))
            return 1;
        p = eol + 2;
    }
    return 0;
}

/* 1: response complete (its length in *used), 0: need more bytes, -1: malformed. */
static int parse_response(conn_t *c, size_t *used) {
    if (!c->head_end) {
        size_t from = c->head_scan > 3 ? c->head_scan - 3 : 0;
        char *hit = memmem(c->buf + from, c->len - from, "\r\n\r\n", 4);
        c->head_scan = c->len;
        if (!hit)
            return c->len > 65536 ? -1 : 0;
        c->head_end = (size_t)(hit - c->buf) + 4;
        if (c->len < 12 || memcmp(c->buf, "ICAP/1.0 ", 9) != 0)
            return -1;
        c->status = atoi(c->buf + 9);
        c->close_after = has_connection_close(c->buf, c->head_end);
        long body = -1;
        const char *body_keys[] = {"res-body=", "req-body=", "opt-body="};
        for (int i = 0; i < 3 && body < 0; i++)
            body = header_value_offset(c->buf, c->head_end, body_keys[i]);
        if (body >= 0) {
            c->has_body = 1;
            c->body_pos = c->head_end + (size_t)body;
        } else {
            long null_body = header_value_offset(c->buf, c->head_end, "null-body=");
            c->need = c->head_end + (size_t)(null_body > 0 ? null_body : 0);
        }
    }
    if (!c->has_body) {
        if (c->len < c->need)
            return 0;
        *used = c->need;
        return 1;
    }
    for (;;) {
        if (c->body_pos >= c->len)
            return 0;
        char *eol = memmem(c->buf + c->body_pos, c->len - c->body_pos, "\r\n", 2);
        if (!eol)
            return 0;
        char *endp;
        unsigned long size = strtoul(c->buf + c->body_pos, &endp, 16);
        if (endp == c->buf + c->body_pos)
            return -1;
        size_t after = (size_t)(eol - c->buf) + 2;
        if (size == 0) { /* optional trailers, then the empty line */
            if (c->len >= after + 2 && memcmp(c->buf + after, "\r\n", 2) == 0) {
                *used = after + 2;
                return 1;
            }
            char *end = memmem(c->buf + after, c->len - after, "\r\n\r\n", 4);
            if (!end)
                return 0;
            *used = (size_t)(end - c->buf) + 4;
            return 1;
        }
        if (c->len < after + size + 2)
            return 0;
        c->body_pos = after + size + 2;
    }
}

static void record(conn_t *c, uint64_t t_done) {
    completed++;
    if (c->status == 204)
        s204++;
    else if (c->status == 200)
        s200++;
    else {
        s_other++;
        char what[64];
        snprintf(what, sizeof what, "unexpected ICAP status %d", c->status);
        note_error(what);
    }
    if (check_status)
        check_status[c->url_index] = c->status;
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[n_lat++] = t_done - c->t_base;
}

static void conn_read(conn_t *c) {
    if (c->cap - c->len < READ_CHUNK) {
        c->cap = c->cap ? c->cap * 2 : 2 * READ_CHUNK;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) { /* a close between transactions is a plain reconnect; in the middle of one, an error */
        if (c->state == RECEIVING || c->state == SENDING)
            note_error(n == 0 ? "server closed the connection mid-transaction" : "read failed");
        conn_reset(c);
        return;
    }
    if (c->state != RECEIVING && c->state != SENDING) {
        note_error("bytes from the server with no request outstanding");
        conn_reset(c);
        return;
    }
    c->len += (size_t)n;
    size_t used = 0;
    int r = parse_response(c, &used);
    if (r == 0)
        return;
    if (r < 0 || used != c->len) {
        note_error(r < 0 ? "malformed response" : "extra bytes after a response");
        conn_reset(c);
        return;
    }
    uint64_t done = now_ns();
    if (counted_by_send_time ? c->in_window : (done >= window_start && done < window_end))
        record(c, done);
    c->state = IDLE;
    if (c->close_after)
        conn_reset(c);
}

/* ---- main loop ------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(double p) {
    if (!n_lat)
        return 0;
    size_t i = (size_t)(p * (double)(n_lat - 1) + 0.5);
    return (double)lat[i] / 1000.0;
}

static void usage(void) {
    die("usage: loadgen --port P --service S --urls FILE [--connections K] [--duration T] [--warmup W] "
        "[--rate R] [--check OUT]");
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--service"))
            opt.service = v;
        else if (!strcmp(a, "--urls"))
            opt.urls_path = v;
        else if (!strcmp(a, "--connections"))
            opt.connections = atoi(v);
        else if (!strcmp(a, "--duration"))
            opt.duration = atof(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atof(v);
        else if (!strcmp(a, "--rate"))
            opt.rate = atof(v);
        else if (!strcmp(a, "--check"))
            opt.check_path = v;
        else
            usage();
    }
    if (opt.port <= 0 || !opt.urls_path || opt.connections < 1 || opt.connections > MAX_CONNS ||
        opt.duration <= 0 || opt.duration > 600 || opt.warmup < 0 || opt.rate < 0)
        usage();
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    build_requests();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < opt.connections; i++) {
        conns[i].fd = -1;
        conn_open(&conns[i]);
    }
    int check = opt.check_path != NULL;
    int open_loop = opt.rate > 0 && !check;
    if (check) {
        check_status = calloc(n_requests, sizeof *check_status);
        opt.warmup = 0;
    }
    counted_by_send_time = check || open_loop;
    uint64_t start = now_ns();
    window_start = start + (uint64_t)(opt.warmup * 1e9);
    window_end = check ? start + CHECK_LIMIT_NS : window_start + (uint64_t)(opt.duration * 1e9);
    uint64_t hard_end = window_end + (open_loop ? DRAIN_NS : 0);
    int drain = check || open_loop; /* wait for the answers still outstanding when sending stops */
    double interval_ns = open_loop ? 1e9 / opt.rate : 0;
    long next = 0; /* closed loop and check: next URL; open loop: next scheduled request */
    int in_window = 0;
    struct epoll_event events[MAX_CONNS];
    for (;;) {
        uint64_t now = now_ns();
        if (!in_window && now >= window_start) {
            in_window = 1;
            printf("MEASURE_START\n");
            fflush(stdout);
        }
        int sending_over = check ? next >= n_requests || now >= window_end
                         : open_loop ? start + (uint64_t)((double)next * interval_ns) >= window_end
                                     : now >= window_end;
        int busy = 0;
        for (int i = 0; i < opt.connections; i++)
            busy += conns[i].state == SENDING || conns[i].state == RECEIVING;
        if (now >= hard_end || (sending_over && (!drain || busy == 0)))
            break;
        /* Hand out work to idle connections. */
        uint64_t wake = sending_over || open_loop ? hard_end : window_end;
        if (!in_window && window_start < wake)
            wake = window_start;
        for (int i = 0; i < opt.connections && !sending_over; i++) {
            conn_t *c = &conns[i];
            if (c->state == DEAD)
                conn_reset(c);
            if (c->state != IDLE)
                continue;
            if (check) {
                if (next >= n_requests)
                    break;
                conn_send(c, next, now, 1);
            } else if (open_loop) {
                uint64_t due = start + (uint64_t)((double)next * interval_ns);
                if (due >= window_end)
                    break;
                if (due > now) {
                    if (due < wake)
                        wake = due;
                    break;
                }
                conn_send(c, next, due, due >= window_start);
            } else {
                conn_send(c, next, now, 0);
            }
            next++;
        }
        if (open_loop && !sending_over) { /* wake for the next request; an overdue one waits for a free connection */
            uint64_t due = start + (uint64_t)((double)next * interval_ns);
            if (due > now && due < wake)
                wake = due;
        }
        /* Wait for the network, or until the next scheduled send / the edge of the window. The open loop
           polls without blocking: its core is its own, sends go out on time, and a halted vCPU's slow wake-up
           is not added to every answer. */
        now = now_ns();
        struct timespec timeout = {0, 0};
        if (wake > now && !open_loop) {
            timeout.tv_sec = (time_t)((wake - now) / 1000000000ULL);
            timeout.tv_nsec = (long)((wake - now) % 1000000000ULL);
        }
        int n = epoll_pwait2(epfd, events, MAX_CONNS, &timeout, NULL);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (c->state == SENDING && (events[e].events & EPOLLOUT))
                conn_flush(c);
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_read(c);
        }
    }
    uint64_t stop = now_ns();
    printf("MEASURE_END\n");
    fflush(stdout);
    double seconds = (double)((check ? stop : window_end) - window_start) / 1e9;
    if (open_loop) { /* requests scheduled inside the window that never got an answer: the server fell behind */
        long first = (long)ceil((double)(window_start - start) / interval_ns);
        long last = (long)ceil((double)(window_end - start) / interval_ns);
        if (last - first > completed)
            unfinished = last - first - completed;
    }
    if (check) {
        FILE *f = fopen(opt.check_path, "w");
        if (!f)
            die("cannot write the check file");
        for (long i = 0; i < n_requests; i++)
            fprintf(f, "%d\n", check_status[i]);
        fclose(f);
        if (completed < n_requests) {
            unfinished = n_requests - completed;
            note_error("check run did not finish");
        }
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double own_cpu = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                     (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    double elapsed = (double)(stop - start) / 1e9;
    qsort(lat, n_lat, sizeof *lat, cmp_u64);
    printf("{\"requests\": %ld, \"errors\": %ld, \"unfinished\": %ld, \"seconds\": %.3f, \"rps\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, \"s204\": %ld, \"s200\": %ld, \"other\": %ld, "
           "\"reconnects\": %ld, \"loadgen_busy\": %.3f, \"first_error\": \"%s\"}\n",
           completed, errors, unfinished, seconds, completed / seconds, pct_us(0.50), pct_us(0.99),
           n_lat ? (double)lat[n_lat - 1] / 1000.0 : 0.0, s204, s200, s_other, reconnects, own_cpu / elapsed, first_error);
    return 0;
}
