/* A cheap HTTP-FLV sender for the recorder benchmarks: one thread, epoll, no copies per stream.
 *
 * Serves every GET for a path holding ".flv" as one endless live: the FLV header and decoder
 * configs, then the media loop of one shared buffer, re-stamped on the fly (each tag's 24+8-bit
 * timestamp is rewritten as it leaves, so every loop continues the timeline). A connection
 * costs a cursor (about 100 bytes), never a copy of the media.
 *
 * Pacing follows the wall clock: a tag is due when its media time (from the connection's start)
 * has come; every tick (5 ms) each connection sends one piece of what is due, more while it is
 * more than SPREAD bytes behind (a keyframe), each piece its own send() with TCP_NODELAY: one
 * ~1,448-byte TCP segment at a time in "segments" mode, 1 B-48 KB in "irregular" mode, all that
 * is due every 40 ms in "chunks" mode (pieces of at most 64 KB). A connection whose socket buffer is full (its reader does
 * not read) is not written until epoll says it drained: nothing is buffered in user space
 * beyond the one piece the kernel took only in part, so memory per connection is bounded and a
 * slow reader falls behind the wall clock (which the benchmark's lag measure sees).
 *
 * Built by bench/fast_sender.py at run time (gcc -O2) into a temporary directory; the media file
 * it reads is written by that module from the fake TikTok's own generated media. No binary is
 * kept in git. Every --stats seconds it prints one line on stdout (see stats()).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "TLRFLV1\n"
#define REQ_MAX 4096
#define SPREAD (8 * 1024)     /* backlog above which a tick sends more than one piece */
#define MAX_PIECES_TICK 64    /* pieces one connection may send in one tick (fairness) */
#define IRREGULAR_MAX (48 * 1024)
#define CHUNKS_MAX (64 * 1024) /* chunks mode: a piece; more pieces while behind */
#define FRAMING_MAX 16 /* "%x\r\n" + "\r\n" */

enum mode { SEGMENTS, IRREGULAR, CHUNKS };
enum state { READING, STREAMING };

struct conn {
    int fd;
    int state;
    int blocked;         /* the kernel buffer was full: wait for EPOLLOUT */
    int slot;            /* index in the active array */
    char *req;           /* request bytes, only while READING */
    int req_len;
    char *left;          /* wire bytes of a piece the kernel took only in part */
    int left_len, left_off;
    int64_t start_ms;
    uint32_t base_ts;
    uint64_t sent;       /* stream bytes committed to pieces */
    uint32_t due_loop, due_idx; /* the next tag not yet due */
    uint32_t cur_loop, cur_idx; /* the loop tag holding byte `sent` (for the timestamps) */
    uint64_t due;        /* stream bytes due now */
};

/* media */
static unsigned char *pre, *loop;
static uint32_t pre_len, loop_len, ntags, period_ms, grid_ms, npre;
static uint32_t *offs, *rel, *pre_offs; /* offs has ntags + 1 entries (a sentinel) */

/* options */
static int mode = SEGMENTS, chunked = 1, segment = 1448, tick_ms = 5, sndbuf = 0;
static double stats_s = 5.0;
static uint64_t rng = 0x9E3779B97F4A7C15ULL;

/* state */
static int ep, lfd;
static struct conn **active;
static int nactive, cap_active;
static int64_t t0;
static unsigned char *scratch;
static volatile sig_atomic_t stop;
/* counters since start */
static uint64_t n_sends, n_bytes, n_eagain, n_partial, n_accepted, n_closed;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The media file: MAGIC, 6 little-endian u32 (preamble bytes, loop bytes, loop tags, period
 * ms, grid ms, preamble tags), the preamble, the loop, the loop tags' offsets (+ the end) and
 * relative timestamps, the preamble tags' offsets. */
static void load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    struct stat st;
    if (fstat(fileno(f), &st) < 0) die("fstat");
    unsigned char *buf = malloc(st.st_size);
    if (!buf || fread(buf, 1, st.st_size, f) != (size_t)st.st_size) die("read media");
    fclose(f);
    if (st.st_size < 32 || memcmp(buf, MAGIC, 8) != 0) {
        fprintf(stderr, "%s: not a media file for this sender\n", path);
        exit(1);
    }
    unsigned char *p = buf + 8;
    pre_len = rd32(p), loop_len = rd32(p + 4), ntags = rd32(p + 8);
    period_ms = rd32(p + 12), grid_ms = rd32(p + 16), npre = rd32(p + 20);
    p += 24;
    size_t need = 32 + (size_t)pre_len + loop_len + 4 * ((size_t)ntags + 1 + ntags + npre);
    if ((size_t)st.st_size != need || ntags == 0 || period_ms == 0) {
        fprintf(stderr, "%s: inconsistent media file\n", path);
        exit(1);
    }
    pre = p, p += pre_len;
    loop = p, p += loop_len;
    offs = malloc(4 * ((size_t)ntags + 1));
    rel = malloc(4 * (size_t)ntags);
    pre_offs = malloc(4 * (size_t)(npre ? npre : 1));
    for (uint32_t i = 0; i <= ntags; i++, p += 4) offs[i] = rd32(p);
    for (uint32_t i = 0; i < ntags; i++, p += 4) rel[i] = rd32(p);
    for (uint32_t i = 0; i < npre; i++, p += 4) pre_offs[i] = rd32(p);
}

static void ep_set(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl");
}

static void activate(struct conn *c) {
    if (nactive == cap_active) {
        cap_active = cap_active ? cap_active * 2 : 1024;
        active = realloc(active, sizeof *active * cap_active);
        if (!active) die("realloc");
    }
    c->slot = nactive;
    active[nactive++] = c;
}

static void close_conn(struct conn *c) {
    if (c->slot >= 0) {
        struct conn *last = active[--nactive];
        active[c->slot] = last;
        last->slot = c->slot;
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->req);
    free(c->left);
    free(c);
    n_closed++;
}

/* Write a timestamp field (24 low bits big-endian, then the high byte) for the tag whose
 * header starts at stream-relative `tag_at`, into the piece [from, from + n) copied at `dst`. */
static void patch(unsigned char *dst, uint64_t from, uint32_t n, uint64_t tag_at, uint32_t ts) {
    unsigned char field[4] = {ts >> 16 & 0xFF, ts >> 8 & 0xFF, ts & 0xFF, ts >> 24 & 0xFF};
    for (int k = 0; k < 4; k++) {
        uint64_t at = tag_at + 4 + k;
        if (at >= from && at < from + n) dst[at - from] = field[k];
    }
}

/* Stream bytes due for `c` at `now`: the preamble at once, then every loop tag whose media
 * time has come. */
static void update_due(struct conn *c, int64_t now) {
    int64_t media = now - c->start_ms;
    while ((int64_t)c->due_loop * period_ms + rel[c->due_idx] <= media) {
        if (++c->due_idx == ntags) {
            c->due_idx = 0;
            c->due_loop++;
        }
    }
    c->due = pre_len + (uint64_t)c->due_loop * loop_len + offs[c->due_idx];
}

/* Send what is left of a piece; 1 if it all left, 0 if the kernel's buffer is full, -1 if the
 * connection is gone. */
static int send_left(struct conn *c) {
    while (c->left_off < c->left_len) {
        ssize_t m = send(c->fd, c->left + c->left_off, c->left_len - c->left_off, MSG_NOSIGNAL);
        if (m < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                n_eagain++;
                return 0;
            }
            if (errno == EINTR) continue;
            return -1;
        }
        c->left_off += m;
    }
    free(c->left);
    c->left = NULL;
    c->left_len = c->left_off = 0;
    return 1;
}

static void block(struct conn *c) {
    c->blocked = 1;
    ep_set(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLRDHUP | EPOLLOUT);
}

static uint32_t piece_size(uint64_t backlog) {
    uint64_t n;
    if (mode == SEGMENTS) {
        n = chunked ? segment - (3 + 4) : segment; /* "5a1\r\n" ... "\r\n": ~one segment on the wire */
    } else if (mode == IRREGULAR) {
        double u = (double)(xorshift() >> 11) / 9007199254740992.0;
        n = (uint64_t)exp(u * log((double)IRREGULAR_MAX));
        if (n < 1) n = 1;
    } else {
        n = CHUNKS_MAX;
    }
    return n < backlog ? (uint32_t)n : (uint32_t)backlog;
}

/* Build and send one piece; 1 sent (all or in part), 0 blocked, -1 gone. */
static int send_piece(struct conn *c) {
    uint64_t backlog = c->due - c->sent;
    uint32_t n = piece_size(backlog);
    uint64_t s = c->sent;
    unsigned char *body = scratch + (chunked ? 8 : 0);
    if (s < pre_len) {
        if (n > pre_len - s) n = pre_len - s;
        memcpy(body, pre + s, n);
        for (uint32_t i = 0; i < npre; i++) patch(body, s, n, pre_offs[i], c->base_ts);
    } else {
        uint64_t o = (s - pre_len) % loop_len;
        if (n > loop_len - o) n = loop_len - o; /* a piece never crosses the end of a loop */
        memcpy(body, loop + o, n);
        uint32_t lts = c->base_ts + c->cur_loop * period_ms;
        for (uint32_t i = c->cur_idx; i < ntags && offs[i] < o + n; i++)
            patch(body, o, n, offs[i], lts + rel[i]);
    }
    unsigned char *wire = body;
    size_t len = n;
    if (chunked) {
        char head[12];
        int h = snprintf(head, sizeof head, "%x\r\n", n);
        wire = body - h;
        memcpy(wire, head, h);
        memcpy(body + n, "\r\n", 2);
        len = h + n + 2;
    }
    ssize_t m = send(c->fd, wire, len, MSG_NOSIGNAL);
    if (m < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            n_eagain++;
            return 0; /* nothing left: the piece is built again next time */
        }
        return -1;
    }
    n_sends++;
    n_bytes += m;
    /* committed: advance the cursor past the piece */
    c->sent += n;
    if (c->sent > pre_len) {
        uint64_t at = c->sent - pre_len;
        uint32_t l = at / loop_len, o = at % loop_len;
        if (l != c->cur_loop) c->cur_loop = l, c->cur_idx = 0;
        while (c->cur_idx + 1 < ntags && offs[c->cur_idx + 1] <= o) c->cur_idx++;
    }
    if ((size_t)m < len) { /* the rest of this piece goes first, when the kernel takes it */
        n_partial++;
        c->left_len = len - m;
        c->left_off = 0;
        c->left = malloc(c->left_len);
        if (!c->left) die("malloc");
        memcpy(c->left, wire + m, c->left_len);
        return 0;
    }
    return 1;
}

static void serve(struct conn *c, int64_t now) {
    if (c->blocked) return;
    if (c->left) {
        int r = send_left(c);
        if (r < 0) {
            close_conn(c);
            return;
        }
        if (r == 0) {
            block(c);
            return;
        }
    }
    update_due(c, now);
    for (int k = 0; k < MAX_PIECES_TICK && c->due > c->sent; k++) {
        int r = send_piece(c);
        if (r < 0) {
            close_conn(c);
            return;
        }
        if (r == 0) {
            block(c);
            return;
        }
        if (c->due - c->sent <= SPREAD) break;
    }
}

static const char OK_CHUNKED[] =
    "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n"
    "Connection: close\r\nCache-Control: no-cache\r\n\r\n";
static const char OK_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n"
    "Cache-Control: no-cache\r\n\r\n";
static const char NOT_FOUND[] =
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void on_request(struct conn *c, int64_t now) {
    /* "GET <path> HTTP/1.1": any path holding ".flv" is a live (query, signature ignored) */
    char *sp = memchr(c->req, ' ', c->req_len);
    char *eol = memchr(c->req, '\r', c->req_len);
    int ok = sp && eol && sp - c->req == 3 && memcmp(c->req, "GET", 3) == 0 &&
             memmem(sp, eol - sp, ".flv", 4) != NULL;
    free(c->req);
    c->req = NULL;
    const char *head = ok ? (chunked ? OK_CHUNKED : OK_CLOSE) : NOT_FOUND;
    size_t len = strlen(head);
    if (send(c->fd, head, len, MSG_NOSIGNAL) != (ssize_t)len || !ok) {
        close_conn(c);
        return;
    }
    c->state = STREAMING;
    c->start_ms = now;
    int64_t since = now - t0;
    c->base_ts = (uint32_t)((since + grid_ms - 1) / grid_ms * grid_ms);
    activate(c);
    serve(c, now); /* the preamble and the first tags leave at once */
}

static void on_readable(struct conn *c, int64_t now) {
    if (c->state == READING) {
        ssize_t m = recv(c->fd, c->req + c->req_len, REQ_MAX - 1 - c->req_len, 0);
        if (m <= 0) {
            if (m < 0 && (errno == EAGAIN || errno == EINTR)) return;
            close_conn(c);
            return;
        }
        c->req_len += m;
        c->req[c->req_len] = 0;
        if (memmem(c->req, c->req_len, "\r\n\r\n", 4)) {
            on_request(c, now);
        } else if (c->req_len >= REQ_MAX - 1) {
            close_conn(c);
        }
        return;
    }
    char sink[1024]; /* a streaming client says nothing more; EOF means it went away */
    for (;;) {
        ssize_t m = recv(c->fd, sink, sizeof sink, 0);
        if (m > 0) continue;
        if (m < 0 && (errno == EAGAIN || errno == EINTR)) return;
        close_conn(c);
        return;
    }
}

static void on_accept(int64_t now) {
    (void)now;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            if (errno == EMFILE || errno == ENFILE) {
                perror("accept4");
                return;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->slot = -1;
        c->req = malloc(REQ_MAX);
        if (!c->req) die("malloc");
        ep_set(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLRDHUP);
        n_accepted++;
    }
}

/* One line: time, connections streaming, sends and payload+framing bytes per second since the
 * last line, EAGAINs and partial sends since start, and how far behind the wall clock the
 * connections' send cursors are (ms: the largest, and how many are over 1 s). */
static void stats(double dt, uint64_t sends, uint64_t bytes, int64_t now) {
    int64_t worst = 0;
    int over = 0;
    for (int i = 0; i < nactive; i++) {
        struct conn *c = active[i];
        update_due(c, now);
        int64_t behind = 0;
        if (c->due > c->sent && c->sent >= pre_len) {
            int64_t sent_media = (int64_t)c->cur_loop * period_ms + rel[c->cur_idx];
            behind = now - c->start_ms - sent_media;
        }
        if (behind > worst) worst = behind;
        if (behind > 1000) over++;
    }
    printf("stats t=%.1f pid=%d conns=%d accepted=%llu closed=%llu sends_per_s=%.0f "
           "mbit_per_s=%.1f eagain=%llu partial=%llu behind_max_ms=%lld behind_over_1s=%d\n",
           now_s(), (int)getpid(), nactive, (unsigned long long)n_accepted,
           (unsigned long long)n_closed, sends / dt, bytes * 8 / dt / 1e6,
           (unsigned long long)n_eagain, (unsigned long long)n_partial, (long long)worst, over);
    fflush(stdout);
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: flv_sender --media FILE --port N [--host 127.0.0.1] [--mode segments|irregular|"
            "chunks]\n  [--framing chunked|close] [--segment 1448] [--tick-ms 5] [--sndbuf B]"
            " [--stats S] [--procs N] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *media = NULL, *host = "127.0.0.1";
    int port = -1, procs = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--media")) media = v;
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--segment")) segment = atoi(v);
        else if (!strcmp(a, "--tick-ms")) tick_ms = atoi(v);
        else if (!strcmp(a, "--sndbuf")) sndbuf = atoi(v);
        else if (!strcmp(a, "--stats")) stats_s = atof(v);
        else if (!strcmp(a, "--procs")) procs = atoi(v);
        else if (!strcmp(a, "--seed")) rng = strtoull(v, NULL, 10) | 1;
        else if (!strcmp(a, "--framing")) {
            if (!strcmp(v, "chunked")) chunked = 1;
            else if (!strcmp(v, "close")) chunked = 0;
            else usage();
        } else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "segments")) mode = SEGMENTS;
            else if (!strcmp(v, "irregular")) mode = IRREGULAR;
            else if (!strcmp(v, "chunks")) mode = CHUNKS;
            else usage();
        } else usage();
    }
    if (!media || port < 0 || segment < 16 || tick_ms < 1 || procs < 1) usage();
    if (mode == CHUNKS && tick_ms == 5) tick_ms = 40; /* whole tags every 40 ms, as the fake */
    load(media);
    scratch = malloc(CHUNKS_MAX + FRAMING_MAX + 16);
    if (!scratch) die("malloc");

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("listening http://%s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    for (int p = 1; p < procs; p++) { /* workers share the listening socket */
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM); /* a worker ends with the first process */
            rng ^= (uint64_t)getpid() << 32;
            break;
        }
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN | (procs > 1 ? EPOLLEXCLUSIVE : 0), .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl listen");

    t0 = now_ms();
    int64_t next_tick = t0 + tick_ms;
    double stats_at = now_s() + stats_s, stats_from = now_s();
    uint64_t sends0 = 0, bytes0 = 0;
    struct epoll_event evs[256];
    while (!stop) {
        int64_t now = now_ms();
        int timeout = next_tick > now ? (int)(next_tick - now) : 0;
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        now = now_ms();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                on_accept(now);
                continue;
            }
            uint32_t e = evs[i].events;
            if (e & (EPOLLERR | EPOLLHUP)) {
                close_conn(c);
                continue;
            }
            if (e & EPOLLOUT && c->blocked) {
                c->blocked = 0;
                ep_set(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLRDHUP);
            }
            if (e & (EPOLLIN | EPOLLRDHUP)) on_readable(c, now);
        }
        if (now >= next_tick) {
            /* serve() may close (and swap out) the current connection: walk backwards */
            for (int i = nactive - 1; i >= 0; i--) {
                if (i < nactive) serve(active[i], now);
            }
            next_tick += tick_ms;
            if (next_tick <= now) next_tick = now + tick_ms; /* never a burst of late ticks */
        }
        if (stats_s > 0 && now_s() >= stats_at) {
            double t = now_s();
            stats(t - stats_from, n_sends - sends0, n_bytes - bytes0, now);
            sends0 = n_sends, bytes0 = n_bytes, stats_from = t;
            stats_at = t + stats_s;
        }
    }
    return 0;
}
