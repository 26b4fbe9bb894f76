/*
 * loadgen: a lean load generator for Server-Sent Events fan-out (ssechat issue 4),
 * and for the same fan-out over WebSockets (issue 6, --transport ws).
 *
 * Opens N event streams (GET /events, HTTP/1.1 chunked) to HOST:PORT, publishes
 * messages with keep-alive POSTs (POST /send-message, {"message":"<seq> <send_ns>"}),
 * and measures what comes back: delivered events/s, loss, duplicates, latency
 * (receipt time minus the send time carried in the message), POSTs/s answered,
 * time to connect, join announcements delivered, and its own CPU use.
 *
 * One epoll loop per process, no threads. Bytes are parsed in bulk: chunk framing
 * is stripped in place (a small state machine runs only on the few framing bytes
 * between chunks), then memchr() finds line ends and only `data:` lines are looked
 * at. Chunk and line boundaries may fall anywhere in a read.
 *
 * Past one process's open-files limit, --procs N forks N workers that each hold a
 * share of the streams; the parent publishes and coordinates them through a shared
 * memory page. Every phase has a deadline; on failure the last stdout line is still
 * one JSON object, with "ok": false and the reason.
 *
 * With --ports A,B,... the streams go to several servers that serve one room (the
 * nodes of a multi-process deployment): equal contiguous blocks of streams, one per
 * port, each block held by its own worker processes, so the result also reports
 * every port's share (delivery, loss, latency). The publishers connect to
 * --publish-ports (default: the first port), round robin.
 *
 * With --transport ws the streams are WebSockets (GET /ws, RFC 6455): the server's
 * unmasked frames are parsed with a small header state machine, each text frame
 * is one event as JSON {"id","event","data"} whose "data" is read like a data:
 * line, pings are answered, and permessage-deflate (RFC 7692, --ws-deflate) is
 * inflated with zlib. The publishers are WebSockets too: each sends a masked text
 * frame {"type":"send","message":"<seq> <send_ns>"} and waits for its ack frame.
 *
 * Timestamps are CLOCK_MONOTONIC, which every process on the machine shares.
 * Latency is kept in a log-linear histogram of microseconds (0.1% resolution,
 * exact below 2.048 ms) rather than a sample array: every sample counts, and the
 * workers' histograms merge exactly.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define JOIN_TEXT "A new user joined!"
#define MAX_WORKERS 64
#define MAX_PORTS 16
#define CARRY_MAX 112          /* longest line prefix kept across reads */
#define HEAD_MAX 8192          /* largest response head accepted */
#define READ_BUF (256 * 1024)
#define MAX_READS_PER_WAKE 8
#define CONNECT_TRIES 3
#define SATURATED_PCT 90.0
#define MIN_WINDOW_FOR_SATURATION_S 0.5

/* ---------------------------------------------------------------- options */

static struct {
    const char *host;
    int nports, ports[MAX_PORTS];           /* where the streams go, in blocks */
    int npub_ports, pub_ports[MAX_PORTS];   /* where publishers go, round robin */
    long streams;
    int src_addrs;          /* 0: automatic */
    int procs;              /* 0: automatic */
    int inflight;
    int expect_joins;
    long messages;
    double rate;            /* messages/s over all publishers; 0: as fast as possible */
    double duration_s;      /* stop sending after this long; 0: no cap but publish_timeout */
    int publishers;
    double connect_timeout_s;
    double publish_timeout_s;
    double drain_timeout_s;
    double sync_timeout_s;
    double hold_s;
    double max_s;
    int sync;
    int ws;                 /* WebSockets instead of event streams and POSTs */
    int ws_deflate;         /* offer permessage-deflate on the streams */
    const char *path;       /* the streams' GET target with --transport sse */
    const char *label;
} O = {
    .host = "127.0.0.1",
    .nports = 1,
    .ports = {3000},
    .streams = 100,
    .inflight = 256,
    .publishers = 4,
    .connect_timeout_s = 60,
    .publish_timeout_s = 60,
    .drain_timeout_s = 10,
    .sync_timeout_s = 120,
    .max_s = 300,
    .path = "/events",
    .label = "",
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: loadgen [options]\n"
        "  --host H             server address (default 127.0.0.1)\n"
        "  --port P             server port (default 3000)\n"
        "  --ports P1,P2,...    several servers serving one room: the streams are split\n"
        "                       into equal blocks, one per port, each held by its own\n"
        "                       worker process(es); the result has a per_port breakdown\n"
        "  --publish-ports LIST ports the publishers connect to, round robin\n"
        "                       (default: the first of --ports)\n"
        "  --streams N          event streams to open (default 100)\n"
        "  --src-addrs K        spread streams over source addresses 127.0.0.1..127.0.0.K\n"
        "                       (default: automatic, one per ~28,000 streams)\n"
        "  --procs N            stream-holding processes (default: automatic, one per\n"
        "                       open-files limit's worth of streams)\n"
        "  --inflight K         streams connecting at once (default 256)\n"
        "  --expect-joins       wait until every join announcement is delivered:\n"
        "                       N(N+1)/2 'A new user joined!' events\n"
        "  --messages M         messages to publish (0: none)\n"
        "  --rate R             messages/s over all publishers (default: as fast as possible)\n"
        "  --duration S         stop publishing after S seconds\n"
        "  --publishers P       keep-alive POST connections (default 4)\n"
        "  --connect-timeout S  deadline for all streams up (and joins) (default 60)\n"
        "  --publish-timeout S  deadline for publishing (default 60)\n"
        "  --drain-timeout S    wait this long after the last answer for deliveries (default 10)\n"
        "  --sync               after connecting print 'CONNECTED {json}' and wait for a\n"
        "                       line on stdin before publishing (lets a runner measure)\n"
        "  --sync-timeout S     deadline for that line (default 120)\n"
        "  --hold S             keep the streams open S seconds after connecting\n"
        "  --max-seconds S      hard cap on the whole run (default 300)\n"
        "  --transport T        sse (GET /events, POST /send-message; default) or ws\n"
        "                       (GET /ws; messages sent as frames, answered by ack frames)\n"
        "  --ws-deflate         with --transport ws: offer permessage-deflate on the streams\n"
        "  --path P             with --transport sse: the streams' GET target (default\n"
        "                       /events), e.g. /stream?ch=room:lobby; a data line that is a\n"
        "                       JSON object is read from its \"text\" (or \"data\") string\n"
        "  --label TEXT         copied into the JSON result\n"
        "Prints one JSON line of results on stdout; exit 0 ok, 1 a phase failed or timed\n"
        "out, 2 setup error (bad option, out of file descriptors or ports).\n");
}

/* ---------------------------------------------------------------- time, cpu */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static inline uint64_t s_to_ns(double s) { return (uint64_t)(s * 1e9); }

/* ---------------------------------------------------------------- histogram */

/* Values in microseconds: exact below 2048, then 1024 sub-buckets per power of two. */
#define HIST_LINEAR 2048
#define HIST_SUB 1024
#define HIST_N (HIST_LINEAR + HIST_SUB * 24)

static inline int hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= 11 */
    if (e > 11 + 23)
        return HIST_N - 1;
    return HIST_LINEAR + (e - 11) * HIST_SUB + (int)((v >> (e - 10)) & (HIST_SUB - 1));
}

static double hist_value(int i)
{
    if (i < HIST_LINEAR)
        return i;
    int k = i - HIST_LINEAR, e = 11 + k / HIST_SUB, m = k % HIST_SUB;
    double width = (double)(1ull << (e - 10));
    return (HIST_SUB + m) * width + width / 2;
}

/* ---------------------------------------------------------------- shared state */

enum { PH_CONNECT, PH_SYNC, PH_RUN, PH_FINAL, PH_ABORT };
enum { MARK_START, MARK_CONNECTED, MARK_RUN, MARK_FINAL, MARKS };

struct counters {
    uint64_t opened, up, failed, retried, closed, joins, uniq, dups, other, ooo, heartbeats, deflated;
    uint64_t bytes, reads, first_msg_ns, last_msg_ns, last_join_ns, lat_max_us, lat_sum_us;
};

/* One per process; written by its process only, read by the controller. */
struct slot {
    struct counters c;
    uint64_t cpu_us[MARKS], wall_ns[MARKS];
    uint64_t missing, gap_streams;
    int done, exit_code, marked;
    int ep;                 /* the port all its streams go to (an ENDPOINTS index), or -1 */
    long streams;           /* how many streams it holds */
    char err[256];
    uint64_t hist[HIST_N];
    uint64_t first_hist[HIST_N];   /* per stream: connect() to its first event */
};

struct shared {
    int phase;
    int nslots;
    uint64_t msgs;          /* M: message sequence numbers are 0..M-1 */
    struct slot slot[];     /* slot 0: controller; 1..W: stream workers */
};

static struct shared *SH;
static struct slot *ME;
static uint64_t *ACK;        /* M bits, shared: acknowledged messages */
static int SLOT;             /* my slot index */
static int NWORKERS;         /* W: 0 means the controller holds the streams */
static pid_t PARENT;
static pid_t WPID[MAX_WORKERS + 1];
static struct counters C;    /* my live counters, published to ME->c each loop */

static void publish_counters(void)
{
    uint64_t *dst = (uint64_t *)&ME->c, *src = (uint64_t *)&C;
    for (size_t i = 0; i < sizeof C / sizeof(uint64_t); i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
}

static uint64_t rd(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

#define SUM(field) ({ uint64_t s_ = 0; for (int i_ = 0; i_ < SH->nslots; i_++) s_ += rd(&SH->slot[i_].c.field); s_; })
#define MAXOF(field) ({ uint64_t m_ = 0; for (int i_ = 0; i_ < SH->nslots; i_++) { uint64_t v_ = rd(&SH->slot[i_].c.field); if (v_ > m_) m_ = v_; } m_; })

static void mark(int which)
{
    ME->cpu_us[which] = cpu_us();
    ME->wall_ns[which] = now_ns();
    ME->marked |= 1 << which;
}

/* ---------------------------------------------------------------- errors */

static char ERRBUF[512];
static volatile sig_atomic_t ALARMED;

static void emit_result(int ok, const char *error);

static void kill_workers(void)
{
    for (int i = 1; i <= NWORKERS; i++)
        if (WPID[i] > 0)
            kill(WPID[i], SIGKILL);
}

/* A setup error: say what to do, print the JSON line, exit 2. */
__attribute__((format(printf, 1, 2), noreturn)) static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ERRBUF, sizeof ERRBUF, fmt, ap);
    va_end(ap);
    if (SLOT != 0) {
        /* A worker hands its error to the controller, which reports it. */
        memcpy(ME->err, ERRBUF, sizeof ME->err - 1);
        ME->exit_code = 2;
        __atomic_store_n(&ME->done, 1, __ATOMIC_RELEASE);
        _exit(2);
    }
    fprintf(stderr, "loadgen: error: %s\n", ERRBUF);
    if (SH) {
        __atomic_store_n(&SH->phase, PH_ABORT, __ATOMIC_RELEASE);
        kill_workers();
        emit_result(0, ERRBUF);
    } else {
        printf("{\"ok\": false, \"error\": \"%s\"}\n", ERRBUF);
    }
    fflush(stdout);
    exit(2);
}

static void note_err(const char *fmt, ...)
{
    if (ME->err[0])
        return; /* the first error explains best */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ME->err, sizeof ME->err, fmt, ap);
    va_end(ap);
}

static void on_alarm(int sig) { (void)sig; ALARMED = 1; }

/* ---------------------------------------------------------------- connections */

enum { K_STREAM = 1, K_PUB = 2, K_STDIN = 3 };
#define TAG(kind, idx) (((uint64_t)(kind) << 56) | (uint64_t)(idx))

enum {
    ST_IDLE, ST_CONNECTING, ST_HEAD, ST_RAW, ST_SIZE, ST_EXT, ST_SIZE_LF, ST_DATA,
    ST_DATA_CR, ST_DATA_LF, ST_ENDED, ST_DEAD,
    ST_WS_HDR, ST_WS_PAYLOAD,   /* --transport ws: a frame's header, its payload */
};

struct stream {
    int fd;
    uint8_t st, tries, got_digit, overlong;
    uint8_t carry_len;
    uint8_t first_seen;     /* its first event has been timed */
    uint8_t ws_hlen, ws_op, ws_rsv1;
    uint8_t ws_hdr[10];     /* a frame header as it arrives (2 to 10 bytes) */
    uint8_t ep;             /* its server: an ENDPOINTS index */
    uint32_t chunk_left;    /* chunk or frame payload bytes still to come */
    uint32_t next_seq;      /* highest seq seen + 1, to count out-of-order */
    char *head;             /* only while the response head arrives */
    uint32_t head_len;
    uint64_t opened_ns;     /* the first connect(), for the time to first event */
    z_stream *z;            /* permessage-deflate inflater, when negotiated */
    char *zbuf;             /* a compressed frame's payload as it arrives */
    uint32_t zlen, zcap;
    char carry[CARRY_MAX];
};

static int EP;

/* A server port: its address and the requests made to it once, Host included. */
struct endpoint {
    int port;
    struct sockaddr_in addr;
    char hostport[64];
    char get_req[1024];     /* a stream's GET /events (or --path) or GET /ws */
    int get_len;
    char pub_ws_req[512];   /* a WebSocket publisher's GET /ws */
    int pub_ws_len;
};
static struct endpoint ENDPOINTS[2 * MAX_PORTS];
static int NENDPOINTS;
static long PORT_LO[MAX_PORTS + 1];  /* streams [PORT_LO[k], PORT_LO[k+1]) go to ENDPOINTS[k] */
static int PUB_EP[MAX_PORTS];        /* O.pub_ports as ENDPOINTS indices */
static long S_LO, S_HI, S_N;          /* my streams: global indices [S_LO, S_HI) */
static struct stream *STREAMS;
static long NEXT_OPEN, INFLIGHT;
static uint64_t *BITS;                /* per stream, WPS words of received seqs */
static size_t WPS;
static uint64_t M;
static int SRC_ADDRS, BIND_SRC;
static char RBUF[READ_BUF];

static void ep_add(int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    if (epoll_ctl(EP, EPOLL_CTL_ADD, fd, &ev) < 0)
        fatal("epoll_ctl(ADD): %s", strerror(errno));
}

static void ep_mod(int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    if (epoll_ctl(EP, EPOLL_CTL_MOD, fd, &ev) < 0)
        fatal("epoll_ctl(MOD): %s", strerror(errno));
}

static int new_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            fatal("out of file descriptors (%s) with %" PRIu64 " sockets open in this process: "
                  "raise the limit with `ulimit -n` (now %ld) or split the streams with --procs",
                  strerror(errno), C.opened, (long)rl.rlim_cur);
        }
        fatal("socket: %s", strerror(errno));
    }
    return fd;
}

static void connect_error_fatal(int err, const char *src)
{
    if (err == EADDRNOTAVAIL || err == EADDRINUSE)
        fatal("out of local ports for source address %s (%s): spread the streams over more "
              "source addresses with --src-addrs K", src, strerror(err));
    if (err == EMFILE || err == ENFILE)
        fatal("out of file descriptors: raise `ulimit -n` or use --procs");
}

/* Which port global stream i goes to: its block. */
static int stream_ep(long i)
{
    int k = 0;
    while (k + 1 < O.nports && i >= PORT_LO[k + 1])
        k++;
    return k;
}

static void stream_open(long i)
{
    struct stream *c = &STREAMS[i - S_LO];
    c->ep = (uint8_t)stream_ep(i);
    const struct sockaddr_in *dst = &ENDPOINTS[c->ep].addr;
    int fd = new_socket();
    char src[32] = "127.0.0.1";
    if (BIND_SRC) {
        int one = 1;
        /* Let connect() pick the port, so ports are shared across destinations. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % SRC_ADDRS));
        inet_ntop(AF_INET, &sa.sin_addr, src, sizeof src);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            connect_error_fatal(errno, src);
            fatal("bind to %s: %s", src, strerror(errno));
        }
    }
    if (connect(fd, (struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
        int err = errno;
        connect_error_fatal(err, src);
        close(fd);
        /* Refused or reset at once: try again a bounded number of times. */
        if (++c->tries >= CONNECT_TRIES) {
            C.failed++;
            note_err("stream %ld: connect: %s", i, strerror(err));
            c->st = ST_DEAD;
            INFLIGHT--;
            return;
        }
        C.retried++;
        stream_open(i);
        return;
    }
    C.opened++;
    if (!c->opened_ns)
        c->opened_ns = now_ns();
    c->fd = fd;
    c->st = ST_CONNECTING;
    ep_add(fd, EPOLLOUT, TAG(K_STREAM, i - S_LO));
}

static void open_more(void)
{
    while (INFLIGHT < O.inflight && NEXT_OPEN < S_HI) {
        INFLIGHT++;
        stream_open(NEXT_OPEN++);
    }
}

/* The stream broke. Before its response head: retry (bounded); after: count it closed. */
static void stream_lost(struct stream *c, long local, int err, const char *why)
{
    close(c->fd);
    c->fd = -1;
    free(c->head);
    c->head = NULL;
    c->head_len = 0;
    if (c->z) {
        inflateEnd(c->z);
        free(c->z);
        c->z = NULL;
    }
    free(c->zbuf);
    c->zbuf = NULL;
    c->zlen = c->zcap = 0;
    if (c->st == ST_CONNECTING || c->st == ST_HEAD) {
        if (++c->tries < CONNECT_TRIES) {
            C.retried++;
            c->st = ST_IDLE;
            stream_open(S_LO + local);
            return;
        }
        C.failed++;
        INFLIGHT--;
        note_err("stream %ld failed before its response: %s", S_LO + local,
                 err ? strerror(err) : why);
    } else {
        C.closed++;
        note_err("stream %ld closed by the server: %s", S_LO + local, err ? strerror(err) : why);
    }
    c->st = ST_DEAD;
}

/* The stream's first event of any kind: how long after its connect() it came. */
static inline void first_event(struct stream *c, uint64_t t)
{
    if (c->first_seen)
        return;
    c->first_seen = 1;
    ME->first_hist[hist_index(t > c->opened_ns ? (t - c->opened_ns) / 1000 : 0)]++;
}

static inline void on_message(struct stream *c, long local, uint64_t seq, uint64_t sent, uint64_t t)
{
    if (seq >= M) {
        C.other++;
        return;
    }
    uint64_t *b = BITS + (size_t)local * WPS + (seq >> 6), bit = 1ull << (seq & 63);
    if (*b & bit) {
        C.dups++;
        return;
    }
    *b |= bit;
    C.uniq++;
    if (seq < c->next_seq)
        C.ooo++;
    else
        c->next_seq = (uint32_t)seq + 1;
    uint64_t lat = t > sent ? (t - sent) / 1000 : 0;
    ME->hist[hist_index(lat)]++;
    C.lat_sum_us += lat;
    if (lat > C.lat_max_us)
        C.lat_max_us = lat;
    if (!C.first_msg_ns)
        C.first_msg_ns = t;
    C.last_msg_ns = t;
}

/* A JSON object's "text" (or "data") string value, as a multiplexed stream tags the
 * message (GET /stream): s and n narrowed to it, or left as they are. */
static inline void json_text(const char **s, size_t *n)
{
    const char *k = memmem(*s, *n, "\"text\":", 7);
    if (!k)
        k = memmem(*s, *n, "\"data\":", 7);
    if (!k)
        return;
    size_t off = (size_t)(k - *s) + 7;
    while (off < *n && (*s)[off] == ' ')
        off++;
    if (off >= *n || (*s)[off] != '"')
        return;
    const char *v = *s + off + 1;
    const char *q = memchr(v, '"', *n - off - 1);
    if (!q)
        return;
    *s = v;
    *n = (size_t)(q - v);
}

/* One complete line of the event stream (without its LF). */
static inline void on_line(struct stream *c, long local, const char *s, size_t n, uint64_t t)
{
    if (n && s[n - 1] == '\r')
        n--;
    if (n >= 5 && memcmp(s, "data:", 5) == 0) {
        first_event(c, t);
        s += 5;
        n -= 5;
        if (n && *s == ' ')
            s++, n--;
        if (n && *s == '{')
            json_text(&s, &n);
        if (n && (unsigned)(*s - '0') < 10) {
            uint64_t seq = 0, sent = 0;
            size_t i = 0;
            while (i < n && (unsigned)(s[i] - '0') < 10)
                seq = seq * 10 + (uint64_t)(s[i++] - '0');
            if (i < n && s[i] == ' ') {
                size_t j = ++i;
                while (i < n && (unsigned)(s[i] - '0') < 10)
                    sent = sent * 10 + (uint64_t)(s[i++] - '0');
                if (i == n && i > j) {
                    on_message(c, local, seq, sent, t);
                    return;
                }
            }
            C.other++;
            return;
        }
        if (n == sizeof JOIN_TEXT - 1 && memcmp(s, JOIN_TEXT, n) == 0) {
            C.joins++;
            C.last_join_ns = t;
            return;
        }
        C.other++;
        return;
    }
    if (n && s[0] == ':')
        C.heartbeats++;
    /* id:, retry:, event: and blank lines carry nothing we count. */
}

/* Event-stream payload bytes (framing already stripped): split into lines in bulk. */
static void feed_payload(struct stream *c, long local, const char *p, size_t n, uint64_t t)
{
    const char *end = p + n;
    if (c->carry_len || c->overlong) {
        const char *nl = memchr(p, '\n', n);
        size_t take = (size_t)((nl ? nl : end) - p), room = CARRY_MAX - c->carry_len;
        if (!c->overlong) {
            if (take > room) {
                take = room;
                c->overlong = 1; /* keep the prefix, drop the rest of the line */
            }
            memcpy(c->carry + c->carry_len, p, take);
            c->carry_len += (uint8_t)take;
        }
        if (!nl)
            return;
        on_line(c, local, c->carry, c->carry_len, t);
        c->carry_len = 0;
        c->overlong = 0;
        p = nl + 1;
    }
    const char *nl;
    while (p < end && (nl = memchr(p, '\n', (size_t)(end - p)))) {
        on_line(c, local, p, (size_t)(nl - p), t);
        p = nl + 1;
    }
    if (p < end) {
        size_t rest = (size_t)(end - p);
        if (rest > CARRY_MAX) {
            rest = CARRY_MAX;
            c->overlong = 1;
        }
        memcpy(c->carry, p, rest);
        c->carry_len = (uint8_t)rest;
    }
}

static inline int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Strip chunked framing (RFC 9112 section 7.1) in place; returns the payload length,
   or -1 on a framing error. Bulk copies for chunk data; per-byte only between chunks. */
static ssize_t dechunk(struct stream *c, char *p, size_t n)
{
    char *r = p, *end = p + n, *w = p;
    while (r < end) {
        switch (c->st) {
        case ST_DATA: {
            size_t k = (size_t)(end - r);
            if (k > c->chunk_left)
                k = c->chunk_left;
            if (w != r)
                memmove(w, r, k);
            w += k;
            r += k;
            c->chunk_left -= (uint32_t)k;
            if (!c->chunk_left)
                c->st = ST_DATA_CR;
            break;
        }
        case ST_DATA_CR:
            if (*r == '\r') {
                c->st = ST_DATA_LF;
                r++;
                break;
            }
            __attribute__((fallthrough)); /* tolerate a bare LF */
        case ST_DATA_LF:
            if (*r != '\n')
                return -1;
            r++;
            c->st = ST_SIZE;
            c->chunk_left = 0;
            c->got_digit = 0;
            break;
        case ST_SIZE: {
            int v = hexval(*r);
            if (v >= 0) {
                if (c->chunk_left > (1u << 26))
                    return -1;
                c->chunk_left = c->chunk_left * 16 + (uint32_t)v;
                c->got_digit = 1;
                r++;
            } else if (!c->got_digit) {
                return -1;
            } else if (*r == '\r') {
                c->st = ST_SIZE_LF;
                r++;
            } else if (*r == '\n') {
                c->st = ST_SIZE_LF;
            } else if (*r == ';' || *r == ' ' || *r == '\t') {
                c->st = ST_EXT;
            } else {
                return -1;
            }
            break;
        }
        case ST_EXT: {
            char *q = memchr(r, '\n', (size_t)(end - r));
            if (!q) {
                r = end;
            } else {
                r = q;
                c->st = ST_SIZE_LF;
            }
            break;
        }
        case ST_SIZE_LF:
            if (*r != '\n')
                return -1;
            r++;
            c->st = c->chunk_left ? ST_DATA : ST_ENDED;
            if (c->st == ST_ENDED)
                return w - p;
            break;
        default:
            return w - p;
        }
    }
    return w - p;
}

/* ---------------------------------------------------------------- WebSocket frames */

/* What one compressed frame may inflate to; far above any message the bench sends. */
#define WS_INFLATE_MAX (1 << 20)
static unsigned char ZOUT[WS_INFLATE_MAX];
/* RFC 6455 section 5.5.3: FIN + pong, masked (section 5.1) with a zero key, no
   payload. A pong must echo the ping's payload; ssechat's pings carry none. */
static const unsigned char WS_PONG[6] = {0x8a, 0x80, 0, 0, 0, 0};

static void ws_pong(int fd)
{
    ssize_t w = write(fd, WS_PONG, sizeof WS_PONG);
    (void)w; /* a full socket buffer here means a stuck stream, which the run reports */
}

/* Where the string value of member `name` starts (after its quote) in the JSON object
   s[0..n), or NULL. Enough JSON for the frames the servers send: a member name is
   found by its quoted text, then optional whitespace, a colon and a quote. */
static const char *json_str(const char *s, size_t n, const char *name, size_t name_len)
{
    const char *end = s + n, *p = s;
    while ((p = memmem(p, (size_t)(end - p), name, name_len))) {
        const char *q = p + name_len;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
                q++;
            if (q < end && *q == '"')
                return q + 1;
        }
        p += name_len;
    }
    return NULL;
}

#define JSON_STR(s, n, lit) json_str((s), (n), "\"" lit "\"", sizeof lit + 1)

/* One text frame: JSON {"id","event","data"}; "data" is read like a data: line. */
static void on_ws_text(struct stream *c, long local, const char *s, size_t n, uint64_t t)
{
    first_event(c, t);
    const char *d = JSON_STR(s, n, "data");
    if (!d) {
        C.other++;
        return;
    }
    size_t m = (size_t)(s + n - d);
    if (m && (unsigned)(*d - '0') < 10) {
        uint64_t seq = 0, sent = 0;
        size_t i = 0;
        while (i < m && (unsigned)(d[i] - '0') < 10)
            seq = seq * 10 + (uint64_t)(d[i++] - '0');
        if (i < m && d[i] == ' ') {
            size_t j = ++i;
            while (i < m && (unsigned)(d[i] - '0') < 10)
                sent = sent * 10 + (uint64_t)(d[i++] - '0');
            if (i < m && d[i] == '"' && i > j) {
                on_message(c, local, seq, sent, t);
                return;
            }
        }
        C.other++;
        return;
    }
    if (m >= sizeof JOIN_TEXT && memcmp(d, JOIN_TEXT "\"", sizeof JOIN_TEXT) == 0) {
        C.joins++;
        C.last_join_ns = t;
        return;
    }
    C.other++;
}

/* RFC 7692 section 7.2.2: append 00 00 ff ff to the payload and inflate. */
static ssize_t ws_inflate(struct stream *c)
{
    static unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream *z = c->z;
    z->next_out = ZOUT;
    z->avail_out = sizeof ZOUT;
    z->next_in = (unsigned char *)c->zbuf;
    z->avail_in = c->zlen;
    int r = inflate(z, Z_SYNC_FLUSH);
    if (r != Z_OK && r != Z_BUF_ERROR)
        return -1;
    z->next_in = tail;
    z->avail_in = sizeof tail;
    r = inflate(z, Z_SYNC_FLUSH);
    if ((r != Z_OK && r != Z_BUF_ERROR) || z->avail_in)
        return -1;
    return (ssize_t)(sizeof ZOUT - z->avail_out);
}

/* A whole frame arrived; returns -1 when the stream is gone. */
static int ws_frame_done(struct stream *c, long local, uint64_t t)
{
    switch (c->ws_op) {
    case 0x1:
        if (!c->ws_rsv1) {
            on_ws_text(c, local, c->carry, c->carry_len, t);
            return 0;
        }
        if (!c->z) {
            stream_lost(c, local, 0, "compressed frame without permessage-deflate");
            return -1;
        }
        ssize_t n = ws_inflate(c);
        if (n < 0) {
            stream_lost(c, local, 0, "bad permessage-deflate data");
            return -1;
        }
        on_ws_text(c, local, (const char *)ZOUT, (size_t)n, t);
        return 0;
    case 0x9:
        ws_pong(c->fd);
        return 0;
    case 0xa:
        return 0;
    case 0x8:
        stream_lost(c, local, 0, "the server sent a Close frame");
        return -1;
    default:
        C.other++;
        return 0;
    }
}

static size_t ws_header_size(const uint8_t *hdr, size_t have)
{
    if (have < 2)
        return 2;
    uint8_t len7 = hdr[1] & 0x7f;
    return len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
}

/* Server frames (RFC 6455 section 5.2) as they come: header bytes one state, payload
   in bulk. A text payload is kept only up to CARRY_MAX bytes (the JSON's id, event
   and data all fit), unless compressed, then whole until it is inflated. */
static int ws_feed(struct stream *c, long local, const char *p, size_t n, uint64_t t)
{
    const char *end = p + n;
    while (p < end) {
        if (c->st == ST_WS_HDR) {
            size_t need;
            while ((need = ws_header_size(c->ws_hdr, c->ws_hlen)) > c->ws_hlen && p < end)
                c->ws_hdr[c->ws_hlen++] = (uint8_t)*p++;
            if (c->ws_hlen < need)
                return 0;
            const uint8_t *h = c->ws_hdr;
            uint64_t len = h[1] & 0x7f;
            if (len == 126) {
                len = (uint64_t)h[2] << 8 | h[3];
            } else if (len == 127) {
                len = 0;
                for (int k = 0; k < 8; k++)
                    len = len << 8 | h[2 + k];
            }
            if (h[1] & 0x80) {
                stream_lost(c, local, 0, "a masked frame from the server");
                return -1;
            }
            if (!(h[0] & 0x80)) {
                stream_lost(c, local, 0, "a fragmented message (not expected from the server)");
                return -1;
            }
            if (len > (1u << 26)) {
                stream_lost(c, local, 0, "a frame over 64 MB");
                return -1;
            }
            c->ws_op = h[0] & 0x0f;
            c->ws_rsv1 = (h[0] & 0x40) != 0;
            c->ws_hlen = 0;
            c->chunk_left = (uint32_t)len;
            c->carry_len = 0;
            c->zlen = 0;
            c->st = ST_WS_PAYLOAD;
            if (!c->chunk_left) {
                c->st = ST_WS_HDR;
                if (ws_frame_done(c, local, t) < 0)
                    return -1;
                continue;
            }
        }
        size_t k = (size_t)(end - p);
        if (k > c->chunk_left)
            k = c->chunk_left;
        if (c->ws_rsv1) {
            if (c->zlen + k > c->zcap) {
                uint32_t cap = c->zcap ? c->zcap : 256;
                while (cap < c->zlen + k)
                    cap *= 2;
                if (!(c->zbuf = realloc(c->zbuf, cap)))
                    fatal("out of memory");
                c->zcap = cap;
            }
            memcpy(c->zbuf + c->zlen, p, k);
            c->zlen += (uint32_t)k;
        } else if (c->carry_len < CARRY_MAX) {
            size_t room = CARRY_MAX - c->carry_len, take = k < room ? k : room;
            memcpy(c->carry + c->carry_len, p, take);
            c->carry_len += (uint8_t)take;
        }
        p += k;
        c->chunk_left -= (uint32_t)k;
        if (!c->chunk_left) {
            c->st = ST_WS_HDR;
            if (ws_frame_done(c, local, t) < 0)
                return -1;
        }
    }
    return 0;
}

/* Accumulate the response head; returns bytes consumed from p, or -1 if the stream failed. */
static ssize_t head_feed(struct stream *c, long local, const char *p, size_t n)
{
    if (!c->head && !(c->head = malloc(HEAD_MAX)))
        fatal("out of memory");
    size_t old = c->head_len, take = n;
    if (old + take > HEAD_MAX)
        take = HEAD_MAX - old;
    memcpy(c->head + old, p, take);
    c->head_len += (uint32_t)take;
    size_t from = old >= 3 ? old - 3 : 0;
    char *e = memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4);
    if (!e) {
        if (c->head_len >= HEAD_MAX) {
            stream_lost(c, local, 0, "response head too large");
            return -1;
        }
        return (ssize_t)n;
    }
    size_t hlen = (size_t)(e - c->head) + 4;
    c->head[hlen - 2] = 0;
    int ok = O.ws ? strncmp(c->head, "HTTP/1.1 101", 12) == 0
                  : (strncmp(c->head, "HTTP/1.1 200", 12) == 0 || strncmp(c->head, "HTTP/1.0 200", 12) == 0);
    if (!ok) {
        char *eol = strstr(c->head, "\r\n");
        if (eol)
            *eol = 0;
        C.failed++;
        INFLIGHT--;
        note_err("GET %s answered \"%.80s\"", O.ws ? "/ws" : O.path, c->head);
        close(c->fd);
        free(c->head);
        c->head = NULL;
        c->st = ST_DEAD;
        return -1;
    }
    if (O.ws) {
        /* RFC 7692 section 5: the server accepted permessage-deflate if it says so. */
        for (char *h = strstr(c->head, "\r\n"); h && h[2]; h = strstr(h + 2, "\r\n")) {
            if (strncasecmp(h + 2, "sec-websocket-extensions:", 25) != 0 || !strcasestr(h + 2, "permessage-deflate"))
                continue;
            if (!(c->z = calloc(1, sizeof *c->z)) || inflateInit2(c->z, -15) != Z_OK)
                fatal("zlib: cannot make an inflater");
            C.deflated++;
            break;
        }
        free(c->head);
        c->head = NULL;
        c->head_len = 0;
        c->st = ST_WS_HDR;
        c->ws_hlen = 0;
        C.up++;
        INFLIGHT--;
        return (ssize_t)(hlen - old);
    }
    /* Only the framing matters here: chunked or until close (RFC 9112 section 6.3). */
    int chunked = 0;
    for (char *h = strstr(c->head, "\r\n"); h && h[2]; h = strstr(h + 2, "\r\n"))
        if (strncasecmp(h + 2, "transfer-encoding:", 18) == 0 && strcasestr(h + 2, "chunked"))
            chunked = 1;
    free(c->head);
    c->head = NULL;
    c->head_len = 0;
    c->st = chunked ? ST_SIZE : ST_RAW;
    c->chunk_left = 0;
    c->got_digit = 0;
    C.up++;
    INFLIGHT--;
    return (ssize_t)(hlen - old);
}

static void stream_event(long local, uint32_t events)
{
    struct stream *c = &STREAMS[local];
    if (c->st == ST_DEAD)
        return;
    if (c->st == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            connect_error_fatal(err, "127.0.0.x");
            stream_lost(c, local, err, "connect");
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        const struct endpoint *e = &ENDPOINTS[c->ep];
        ssize_t w = write(c->fd, e->get_req, (size_t)e->get_len);
        if (w != e->get_len) {
            stream_lost(c, local, w < 0 ? errno : 0, "short write of the request");
            return;
        }
        c->st = ST_HEAD;
        ep_mod(c->fd, EPOLLIN, TAG(K_STREAM, local));
        return;
    }
    for (int k = 0; k < MAX_READS_PER_WAKE; k++) {
        ssize_t n = read(c->fd, RBUF, sizeof RBUF);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            stream_lost(c, local, errno, "read");
            return;
        }
        if (n == 0) {
            stream_lost(c, local, 0, "end of stream");
            return;
        }
        uint64_t t = now_ns();
        C.bytes += (uint64_t)n;
        C.reads++;
        char *p = RBUF;
        size_t len = (size_t)n;
        if (c->st == ST_HEAD) {
            ssize_t used = head_feed(c, local, p, len);
            if (used < 0)
                return;
            p += used;
            len -= (size_t)used;
        }
        if (len && c->st != ST_HEAD) {
            if (O.ws) {
                if (ws_feed(c, local, p, len, t) < 0)
                    return;
            } else if (c->st == ST_RAW) {
                feed_payload(c, local, p, len, t);
            } else {
                ssize_t m = dechunk(c, p, len);
                if (m < 0) {
                    stream_lost(c, local, 0, "bad chunked framing");
                    return;
                }
                if (m)
                    feed_payload(c, local, p, (size_t)m, t);
                if (c->st == ST_ENDED) {
                    stream_lost(c, local, 0, "the server ended the response");
                    return;
                }
            }
        }
        if ((size_t)n < sizeof RBUF)
            return;
    }
}

/* ---------------------------------------------------------------- publishers */

enum { P_DOWN, P_CONNECTING, P_HANDSHAKE, P_IDLE, P_WAIT };

struct pub {
    int fd, st;
    int ep;                 /* its server: an ENDPOINTS index */
    uint64_t seq, sent_ns;
    size_t in_len, out_len, out_off, head_len, need;
    uint64_t ws_skip;       /* bytes still to drop of a frame too big for `in` */
    int status, close_after;
    char in[4096];
    char out[512];
};

static struct pub *PUBS;
static int NPUBS_UP;
static uint64_t NEXT_SEQ, SENT, ACKED, POST_ERRORS, POST_BAD, RECONNECTS;
static uint64_t FIRST_SEND_NS, LAST_SEND_NS, LAST_ACK_NS, RUN_T0, SEND_LAG_MAX_NS;
static uint64_t RTT_SUM_NS, RTT_MAX_NS;
static int STOP_SENDING, FIRST_BAD_STATUS;
static const char *STOP_REASON = "";
static char FIRST_BAD_BODY[96];

static void pub_connect(int i)
{
    struct pub *p = &PUBS[i];
    if (RECONNECTS > 10000)
        fatal("publishers reconnected more than 10000 times: the server keeps closing them");
    p->ep = PUB_EP[i % O.npub_ports];
    const struct endpoint *e = &ENDPOINTS[p->ep];
    int fd = new_socket();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&e->addr, sizeof e->addr) < 0 && errno != EINPROGRESS) {
        connect_error_fatal(errno, "127.0.0.1");
        fatal("publisher connect to %s: %s", e->hostport, strerror(errno));
    }
    p->fd = fd;
    p->st = P_CONNECTING;
    p->in_len = 0;
    p->ws_skip = 0;
    p->out_len = p->out_off = 0;
    ep_add(fd, EPOLLOUT, TAG(K_PUB, i));
}

static void pub_reconnect(int i)
{
    struct pub *p = &PUBS[i];
    close(p->fd);
    if (p->st == P_WAIT) {
        POST_ERRORS++; /* the message may or may not have gone out: not expected */
        note_err("a publisher connection closed with a POST in flight");
    }
    if (p->st == P_IDLE || p->st == P_WAIT)
        NPUBS_UP--;
    p->st = P_DOWN;
    RECONNECTS++;
    pub_connect(i);
}

static void pub_flush(int i)
{
    struct pub *p = &PUBS[i];
    while (p->out_off < p->out_len) {
        ssize_t w = write(p->fd, p->out + p->out_off, p->out_len - p->out_off);
        if (w < 0) {
            if (errno == EAGAIN) {
                ep_mod(p->fd, EPOLLIN | EPOLLOUT, TAG(K_PUB, i));
                return;
            }
            pub_reconnect(i);
            return;
        }
        p->out_off += (size_t)w;
    }
}

static void pub_send(int i, uint64_t seq)
{
    struct pub *p = &PUBS[i];
    uint64_t t = now_ns();
    char body[96];
    if (O.ws) {
        /* One masked text frame (RFC 6455 sections 5.2, 5.3); under 126 bytes, so the
           length fits the first byte. The key need not be secret to a load generator. */
        static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
        int blen = snprintf(body, sizeof body, "{\"type\":\"send\",\"message\":\"%" PRIu64 " %" PRIu64 "\"}", seq, t);
        unsigned char *o = (unsigned char *)p->out;
        o[0] = 0x81;
        o[1] = 0x80 | (unsigned char)blen;
        memcpy(o + 2, key, 4);
        for (int k = 0; k < blen; k++)
            o[6 + k] = (unsigned char)body[k] ^ key[k & 3];
        p->out_len = (size_t)blen + 6;
    } else {
        int blen = snprintf(body, sizeof body, "{\"message\":\"%" PRIu64 " %" PRIu64 "\"}", seq, t);
        p->out_len = (size_t)snprintf(p->out, sizeof p->out,
            "POST /send-message HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n%s", ENDPOINTS[p->ep].hostport, blen, body);
    }
    p->out_off = 0;
    p->seq = seq;
    p->sent_ns = t;
    p->st = P_WAIT;
    p->head_len = 0;
    if (!FIRST_SEND_NS)
        FIRST_SEND_NS = t;
    LAST_SEND_NS = t;
    SENT++;
    pub_flush(i);
}

/* The answer to the message in flight (an HTTP status, or an ack or error frame). */
static void pub_answered(int i, int status, const char *body, size_t body_len)
{
    struct pub *p = &PUBS[i];
    uint64_t t = now_ns(), rtt = t - p->sent_ns;
    RTT_SUM_NS += rtt;
    if (rtt > RTT_MAX_NS)
        RTT_MAX_NS = rtt;
    if (status == 200) {
        ACKED++;
        ACK[p->seq >> 6] |= 1ull << (p->seq & 63);
        LAST_ACK_NS = t;
    } else {
        POST_BAD++;
        if (!FIRST_BAD_STATUS) {
            FIRST_BAD_STATUS = status;
            size_t bl = body_len < sizeof FIRST_BAD_BODY - 1 ? body_len : sizeof FIRST_BAD_BODY - 1;
            memcpy(FIRST_BAD_BODY, body, bl);
            FIRST_BAD_BODY[bl] = 0;
            for (size_t k = 0; k < bl; k++)
                if (FIRST_BAD_BODY[k] == '"' || FIRST_BAD_BODY[k] == '\\' || (unsigned char)FIRST_BAD_BODY[k] < 32)
                    FIRST_BAD_BODY[k] = ' ';
        }
    }
    p->st = P_IDLE;
}

static void pub_response(int i)
{
    struct pub *p = &PUBS[i];
    pub_answered(i, p->status, p->in + p->head_len, p->need);
    size_t used = p->head_len + p->need;
    memmove(p->in, p->in + used, p->in_len - used);
    p->in_len -= used;
    p->head_len = 0;
    if (p->close_after) {
        p->close_after = 0;
        pub_reconnect(i);
    }
}

/* A WebSocket publisher's input: the 101, then frames. It is a member of the room,
   so besides the answers to its own messages it receives every event: skipped. */
static void pub_ws_input(int i)
{
    struct pub *p = &PUBS[i];
    size_t off = 0;
    if (p->ws_skip) {
        size_t k = p->in_len < p->ws_skip ? p->in_len : (size_t)p->ws_skip;
        p->ws_skip -= k;
        off = k;
    }
    if (p->st == P_HANDSHAKE) {
        char *e = memmem(p->in, p->in_len, "\r\n\r\n", 4);
        if (!e) {
            if (p->in_len == sizeof p->in)
                fatal("a publisher's 101 head is larger than %zu bytes", sizeof p->in);
            return;
        }
        if (p->in_len < 12 || strncmp(p->in, "HTTP/1.1 101", 12) != 0)
            fatal("GET /ws for a publisher answered \"%.*s\"",
                  (int)(memchr(p->in, '\r', p->in_len) ? (char *)memchr(p->in, '\r', p->in_len) - p->in : 40), p->in);
        off = (size_t)(e - p->in) + 4;
        p->st = P_IDLE;
        NPUBS_UP++;
    }
    while (p->in_len - off >= 2) {
        const unsigned char *h = (const unsigned char *)p->in + off;
        size_t avail = p->in_len - off, hl = ws_header_size(h, 2);
        if (avail < hl)
            break;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            len = (uint64_t)h[2] << 8 | h[3];
        } else if (len == 127) {
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | h[2 + k];
        }
        if (hl + len > sizeof p->in) {
            /* Only a room event is that big (answers are small): drop it unread. */
            if ((h[0] & 0x0f) & 0x8)
                fatal("a control frame of %" PRIu64 " bytes on a publisher connection", len);
            p->ws_skip = hl + len - avail;
            off = p->in_len;
            break;
        }
        if (avail < hl + len)
            break;
        const char *pay = (const char *)h + hl;
        int op = h[0] & 0x0f;
        if (op == 0x1 && !(h[0] & 0x40) && p->st == P_WAIT) {
            const char *type = JSON_STR(pay, len, "type");
            size_t rest = type ? (size_t)(pay + len - type) : 0;
            if (rest >= 4 && memcmp(type, "ack\"", 4) == 0) {
                pub_answered(i, 200, NULL, 0);
            } else if (rest >= 6 && memcmp(type, "error\"", 6) == 0) {
                const char *st = memmem(pay, len, "\"status\":", 9);
                pub_answered(i, st ? atoi(st + 9) : 0, pay, len);
            }
        } else if (op == 0x9) {
            ws_pong(p->fd);
        } else if (op == 0x8) {
            pub_reconnect(i);
            return;
        }
        off += hl + len;
    }
    memmove(p->in, p->in + off, p->in_len - off);
    p->in_len -= off;
}

static void pub_event(int i, uint32_t events)
{
    struct pub *p = &PUBS[i];
    if (p->st == P_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err)
            fatal("publisher connect to %s: %s", ENDPOINTS[p->ep].hostport, strerror(err));
        if (!(events & EPOLLOUT))
            return;
        ep_mod(p->fd, EPOLLIN, TAG(K_PUB, i));
        if (O.ws) {
            const struct endpoint *e = &ENDPOINTS[p->ep];
            memcpy(p->out, e->pub_ws_req, (size_t)e->pub_ws_len);
            p->out_len = (size_t)e->pub_ws_len;
            p->out_off = 0;
            p->st = P_HANDSHAKE;
            pub_flush(i);
            return;
        }
        p->st = P_IDLE;
        NPUBS_UP++;
        return;
    }
    if ((events & EPOLLOUT) && p->out_off < p->out_len) {
        pub_flush(i);
        if (p->out_off == p->out_len && p->st != P_CONNECTING)
            ep_mod(p->fd, EPOLLIN, TAG(K_PUB, i));
        if (p->st == P_CONNECTING)
            return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    ssize_t n = read(p->fd, p->in + p->in_len, sizeof p->in - p->in_len);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        pub_reconnect(i);
        return;
    }
    p->in_len += (size_t)n;
    if (O.ws) {
        pub_ws_input(i);
        return;
    }
    while (p->st == P_WAIT) {
        if (!p->head_len) {
            char *e = memmem(p->in, p->in_len, "\r\n\r\n", 4);
            if (!e) {
                if (p->in_len == sizeof p->in)
                    fatal("a POST answer's head is larger than %zu bytes", sizeof p->in);
                return;
            }
            p->head_len = (size_t)(e - p->in) + 4;
            p->status = (p->in_len > 12 && strncmp(p->in, "HTTP/1.", 7) == 0) ? atoi(p->in + 9) : 0;
            p->need = (size_t)-1;
            p->close_after = strncmp(p->in, "HTTP/1.0", 8) == 0;
            for (char *h = memmem(p->in, p->head_len, "\r\n", 2); h && h + 2 < e; h = memmem(h + 2, (size_t)(e - h), "\r\n", 2)) {
                if (strncasecmp(h + 2, "content-length:", 15) == 0)
                    p->need = (size_t)strtoul(h + 17, NULL, 10);
                else if (strncasecmp(h + 2, "connection:", 11) == 0) {
                    char *v = h + 13;
                    while (*v == ' ')
                        v++;
                    p->close_after = strncasecmp(v, "close", 5) == 0;
                }
            }
            if (p->need == (size_t)-1)
                fatal("a POST answer has no Content-Length; only that framing is supported");
            if (p->head_len + p->need > sizeof p->in)
                fatal("a POST answer is larger than %zu bytes", sizeof p->in);
        }
        if (p->in_len < p->head_len + p->need)
            return;
        pub_response(i);
    }
    if (p->st == P_IDLE && p->in_len)
        fatal("the server sent %zu bytes nobody asked for on a publisher connection", p->in_len);
}

/* Send whatever is due on whichever publisher is free. */
static void pump(uint64_t t)
{
    if (STOP_SENDING || NPUBS_UP < O.publishers)
        return;
    /* Round robin, so that no connection idles long enough for the server to close it. */
    static int next_pub;
    for (int k = 0; k < O.publishers && NEXT_SEQ < M; k++) {
        int i = (next_pub + k) % O.publishers;
        if (PUBS[i].st != P_IDLE)
            continue;
        uint64_t due = RUN_T0;
        if (O.rate > 0)
            due = RUN_T0 + (uint64_t)((double)NEXT_SEQ * 1e9 / O.rate);
        if (t < due)
            return;
        uint64_t cap = O.duration_s > 0 ? s_to_ns(O.duration_s) : s_to_ns(O.publish_timeout_s);
        if (t - RUN_T0 >= cap) {
            STOP_SENDING = 1;
            STOP_REASON = O.duration_s > 0 ? "duration" : "publish_timeout";
            return;
        }
        if (O.rate > 0 && t - due > SEND_LAG_MAX_NS)
            SEND_LAG_MAX_NS = t - due;
        pub_send(i, NEXT_SEQ++);
        next_pub = (i + 1) % O.publishers;
        t = now_ns();
    }
    if (NEXT_SEQ >= M && !STOP_SENDING) {
        STOP_SENDING = 1;
        STOP_REASON = "count";
    }
}

static int posts_in_flight(void)
{
    int n = 0;
    for (int i = 0; i < O.publishers; i++)
        n += PUBS[i].st == P_WAIT;
    return n;
}

/* ---------------------------------------------------------------- results */

static double pct(uint64_t cpu0, uint64_t cpu1, uint64_t w0, uint64_t w1)
{
    return w1 > w0 ? 100.0 * (double)(cpu1 - cpu0) * 1000.0 / (double)(w1 - w0) : 0.0;
}

/* The value at quantile q (0..1] of a histogram holding `samples` values, in ms. */
static double hist_quantile_ms(const uint64_t *h, uint64_t samples, double q)
{
    if (!samples)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)samples), acc = 0;
    if (rank < 1)
        rank = 1;
    int i;
    for (i = 0; i < HIST_N; i++) {
        acc += h[i];
        if (acc >= rank)
            break;
    }
    return hist_value(i) / 1000.0;
}

static uint64_t T_START, T_ALL_UP, T_JOINS_DONE, T_CONNECTED, T_DRAIN_END;
static int DRAIN_TIMED_OUT;
static uint64_t JOINS_EXPECTED;
static char SAT_MSG[256];

static void emit_result(int ok, const char *error)
{
    int n = SH->nslots;
    /* Merge the histograms and counters of every process that finished its slot. */
    static uint64_t h[HIST_N], fh[HIST_N];
    memset(h, 0, sizeof h);
    memset(fh, 0, sizeof fh);
    uint64_t samples = 0, missing = 0, gaps = 0, lat_sum = 0, first_samples = 0;
    for (int s = 0; s < n; s++) {
        struct slot *sl = &SH->slot[s];
        if (!__atomic_load_n(&sl->done, __ATOMIC_ACQUIRE) && s != 0)
            continue;
        for (int i = 0; i < HIST_N; i++) {
            h[i] += sl->hist[i];
            samples += sl->hist[i];
            fh[i] += sl->first_hist[i];
            first_samples += sl->first_hist[i];
        }
        missing += sl->missing;
        gaps += sl->gap_streams;
        lat_sum += rd(&sl->c.lat_sum_us);
    }
    double q[5] = {0.5, 0.9, 0.99, 0.999, 1.0}, qv[5] = {0};
    for (int k = 0; k < 5; k++)
        qv[k] = hist_quantile_ms(h, samples, q[k]);
    double fqv[2] = {hist_quantile_ms(fh, first_samples, 0.5), hist_quantile_ms(fh, first_samples, 0.99)};
    uint64_t t_end = now_ns();

    /* Each port's share: the processes holding its streams, their histograms merged. */
    static uint64_t ph[HIST_N];
    char ports_json[256 * MAX_PORTS] = "";
    size_t pjl = 0;
    for (int k = 0; k < O.nports; k++) {
        memset(ph, 0, sizeof ph);
        uint64_t p_samples = 0, p_uniq = 0, p_missing = 0, p_gaps = 0, p_max = 0, p_last = 0;
        long p_streams = 0;
        for (int s = 0; s < n; s++) {
            struct slot *sl = &SH->slot[s];
            if (sl->ep != k || (!__atomic_load_n(&sl->done, __ATOMIC_ACQUIRE) && s != 0))
                continue;
            for (int i = 0; i < HIST_N; i++) {
                ph[i] += sl->hist[i];
                p_samples += sl->hist[i];
            }
            p_streams += sl->streams;
            p_uniq += rd(&sl->c.uniq);
            p_missing += sl->missing;
            p_gaps += sl->gap_streams;
            if (rd(&sl->c.lat_max_us) > p_max)
                p_max = rd(&sl->c.lat_max_us);
            if (rd(&sl->c.last_msg_ns) > p_last)
                p_last = rd(&sl->c.last_msg_ns);
        }
        double p_window = (p_last > FIRST_SEND_NS && FIRST_SEND_NS) ? (double)(p_last - FIRST_SEND_NS) / 1e9 : 0;
        pjl += (size_t)snprintf(ports_json + pjl, sizeof ports_json - pjl,
            "%s{\"port\": %d, \"streams\": %ld, \"unique\": %" PRIu64 ", \"lost\": %" PRIu64
            ", \"streams_with_gaps\": %" PRIu64 ", \"events_per_s\": %.1f, \"latency_ms\": "
            "{\"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}}",
            k ? ", " : "", O.ports[k], p_streams, p_uniq, p_missing, p_gaps,
            p_window > 0 ? (double)p_uniq / p_window : 0.0, hist_quantile_ms(ph, p_samples, 0.5),
            hist_quantile_ms(ph, p_samples, 0.99), (double)p_max / 1000.0);
        if (pjl >= sizeof ports_json)
            pjl = sizeof ports_json - 1;
    }
    char pub_json[8 * MAX_PORTS] = "";
    for (int k = 0, l = 0; k < O.npub_ports; k++)
        l += snprintf(pub_json + l, sizeof pub_json - (size_t)l, "%s%d", k ? ", " : "", O.pub_ports[k]);
    uint64_t uniq = SUM(uniq), expected = ACKED * (uint64_t)O.streams;
    uint64_t last_msg = MAXOF(last_msg_ns);
    double window_s = (last_msg > FIRST_SEND_NS && FIRST_SEND_NS) ? (double)(last_msg - FIRST_SEND_NS) / 1e9 : 0;
    double pub_s = (LAST_ACK_NS > FIRST_SEND_NS && FIRST_SEND_NS) ? (double)(LAST_ACK_NS - FIRST_SEND_NS) / 1e9 : 0;
    uint64_t delivered_acked = expected > missing ? expected - missing : 0;
    if (!ok && M && !missing && expected > uniq)
        delivered_acked = uniq; /* aborted before the slots computed what is missing */

    /* CPU per process and phase; the busiest process decides SATURATED. */
    double conn_max = 0, run_max = 0, cpu_total = 0;
    int saturated = 0;
    char per[1024] = "";
    size_t pl = 0;
    for (int s = 0; s < n; s++) {
        struct slot *sl = &SH->slot[s];
        int mk = sl->marked;
        double cp = (mk & (1 << MARK_CONNECTED)) ? pct(sl->cpu_us[0], sl->cpu_us[1], sl->wall_ns[0], sl->wall_ns[1]) : -1;
        double rp = (mk & (1 << MARK_RUN)) && (mk & (1 << MARK_FINAL)) ? pct(sl->cpu_us[2], sl->cpu_us[3], sl->wall_ns[2], sl->wall_ns[3]) : -1;
        double cw = (mk & (1 << MARK_CONNECTED)) ? (double)(sl->wall_ns[1] - sl->wall_ns[0]) / 1e9 : 0;
        double rw = rp >= 0 ? (double)(sl->wall_ns[3] - sl->wall_ns[2]) / 1e9 : 0;
        uint64_t last = (mk & (1 << MARK_FINAL)) ? sl->cpu_us[3] : (s == 0 ? cpu_us() : sl->cpu_us[0]);
        cpu_total += (double)(last - sl->cpu_us[0]) / 1e6;
        if (cp > conn_max)
            conn_max = cp;
        if (rp > run_max)
            run_max = rp;
        /* A window this short says little: one busy burst would look like saturation. */
        if ((cw >= MIN_WINDOW_FOR_SATURATION_S && cp >= SATURATED_PCT) ||
            (rw >= MIN_WINDOW_FOR_SATURATION_S && rp >= SATURATED_PCT))
            saturated = 1;
        pl += (size_t)snprintf(per + pl, sizeof per - pl, "%s{\"slot\": %d, \"connect_pct\": %.1f, \"run_pct\": %.1f}",
                               s ? ", " : "", s, cp, rp);
        if (pl >= sizeof per)
            pl = sizeof per - 1;
    }
    if (saturated && !SAT_MSG[0]) {
        snprintf(SAT_MSG, sizeof SAT_MSG,
                 "SATURATED: the generator used %.0f%% of a core while connecting and %.0f%% while "
                 "publishing; these numbers may measure the generator, not the server",
                 conn_max, run_max);
        fprintf(stderr, "loadgen: %s\n", SAT_MSG);
    }
    char errjson[600] = "null";
    if (error) {
        size_t k = 0;
        errjson[k++] = '"';
        for (const char *e = error; *e && k < sizeof errjson - 3; e++)
            errjson[k++] = (*e == '"' || *e == '\\' || (unsigned char)*e < 32) ? '\'' : *e;
        errjson[k++] = '"';
        errjson[k] = 0;
    }
#define SEC(a, b) ((a) && (b) > 0 && (a) >= (b) ? (double)((a) - (b)) / 1e9 : -1.0)
    printf("{\"ok\": %s, \"error\": %s, \"label\": \"%s\", \"transport\": \"%s\", \"ws_deflated_streams\": %" PRIu64
           ", \"first_event_ms\": {\"samples\": %" PRIu64 ", \"p50\": %.3f, \"p99\": %.3f}, "
           "\"streams\": %ld, \"procs\": %d, \"src_addrs\": %d, \"publish_ports\": [%s], \"per_port\": [%s], "
           "\"connect\": {\"all_up_s\": %.3f, \"joins_done_s\": %.3f, \"connected_s\": %.3f, \"up\": %" PRIu64
           ", \"failed\": %" PRIu64 ", \"retried\": %" PRIu64 ", \"joins_expected\": %" PRIu64 ", \"joins_received\": %" PRIu64
           ", \"last_join_s\": %.3f}, "
           "\"publish\": {\"messages\": %" PRIu64 ", \"rate_wanted\": %.1f, \"duration_s\": %.3f, \"publishers\": %d, \"sent\": %" PRIu64
           ", \"acked\": %" PRIu64 ", \"post_errors\": %" PRIu64 ", \"post_bad_status\": %" PRIu64 ", \"first_bad_status\": %d"
           ", \"first_bad_body\": \"%s\", \"reconnects\": %" PRIu64 ", \"stopped_by\": \"%s\", \"publish_s\": %.3f, \"posts_per_s\": %.1f"
           ", \"send_lag_max_ms\": %.1f, \"post_rtt_mean_ms\": %.3f, \"post_rtt_max_ms\": %.3f}, "
           "\"delivery\": {\"expected\": %" PRIu64 ", \"unique\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"loss_pct\": %.4f"
           ", \"duplicates\": %" PRIu64 ", \"out_of_order\": %" PRIu64 ", \"streams_with_gaps\": %" PRIu64
           ", \"window_s\": %.3f, \"events_per_s\": %.1f, \"drain_timed_out\": %s}, "
           "\"latency_ms\": {\"samples\": %" PRIu64 ", \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}, "
           "\"streams_closed\": %" PRIu64 ", \"other_data\": %" PRIu64 ", \"comments\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"reads\": %" PRIu64 ", "
           "\"gen_cpu\": {\"connect_pct\": %.1f, \"run_pct\": %.1f, \"cpu_s\": %.3f, \"per_proc\": [%s]}, "
           "\"saturated\": %s, \"wall_s\": %.3f}\n",
           ok ? "true" : "false", errjson, O.label, O.ws ? "ws" : "sse", SUM(deflated),
           first_samples, fqv[0], fqv[1], O.streams, NWORKERS ? NWORKERS : 1, BIND_SRC ? SRC_ADDRS : 1,
           pub_json, ports_json,
           SEC(T_ALL_UP, T_START), SEC(T_JOINS_DONE, T_START), SEC(T_CONNECTED, T_START), SUM(up), SUM(failed), SUM(retried),
           JOINS_EXPECTED, SUM(joins), SEC(MAXOF(last_join_ns), T_START),
           M, O.rate, O.duration_s, O.publishers, SENT, ACKED, POST_ERRORS, POST_BAD, FIRST_BAD_STATUS, FIRST_BAD_BODY, RECONNECTS, STOP_REASON,
           pub_s, pub_s > 0 ? (double)ACKED / pub_s : 0.0, (double)SEND_LAG_MAX_NS / 1e6,
           (SENT ? (double)RTT_SUM_NS / (double)(ACKED + POST_BAD ? ACKED + POST_BAD : 1) / 1e6 : 0.0), (double)RTT_MAX_NS / 1e6,
           expected, delivered_acked, expected - delivered_acked,
           expected ? 100.0 * (double)(expected - delivered_acked) / (double)expected : 0.0,
           SUM(dups), SUM(ooo), gaps, window_s, window_s > 0 ? (double)uniq / window_s : 0.0,
           DRAIN_TIMED_OUT ? "true" : "false",
           samples, samples ? (double)lat_sum / (double)samples / 1000.0 : 0.0, qv[0], qv[1], qv[2], qv[3],
           (double)MAXOF(lat_max_us) / 1000.0,
           SUM(closed), SUM(other), SUM(heartbeats), SUM(bytes), SUM(reads),
           conn_max, run_max, cpu_total, per, saturated ? "true" : "false", (double)(t_end - T_START) / 1e9);
    fflush(stdout);
}

/* ---------------------------------------------------------------- the loop */

/* This process's part of FINAL: what each of its streams is missing. */
static void finish_slot(void)
{
    publish_counters();
    uint64_t missing = 0, gaps = 0;
    if (M && STREAMS) {
        for (long s = 0; s < S_N; s++) {
            uint64_t miss = 0, *b = BITS + (size_t)s * WPS;
            for (size_t w = 0; w < WPS; w++)
                miss += (uint64_t)__builtin_popcountll(ACK[w] & ~b[w]);
            missing += miss;
            gaps += miss != 0;
        }
    }
    ME->missing = missing;
    ME->gap_streams = gaps;
    mark(MARK_FINAL);
}

static int read_stdin_line(void)
{
    char b[256];
    ssize_t n = read(0, b, sizeof b);
    return n <= 0 || memchr(b, '\n', (size_t)n) != NULL;
}

static int worker_loop(void)
{
    struct epoll_event evs[1024];
    int phase = PH_CONNECT;
    for (;;) {
        open_more();
        int n = epoll_wait(EP, evs, 1024, 5);
        for (int i = 0; i < n; i++)
            stream_event((long)(evs[i].data.u64 & 0xffffffffffffffull), evs[i].events);
        publish_counters();
        int ph = __atomic_load_n(&SH->phase, __ATOMIC_ACQUIRE);
        if (ph != phase) {
            if (phase == PH_CONNECT && ph != PH_ABORT)
                mark(MARK_CONNECTED);
            if (ph == PH_RUN)
                mark(MARK_RUN);
            phase = ph;
            if (ph == PH_FINAL || ph == PH_ABORT) {
                finish_slot();
                __atomic_store_n(&ME->done, 1, __ATOMIC_RELEASE);
                return 0;
            }
        }
        if (getppid() != PARENT)
            return 1; /* the controller is gone */
    }
}

static void set_phase(int ph) { __atomic_store_n(&SH->phase, ph, __ATOMIC_RELEASE); }

static void abort_run(const char *fmt, ...);

/* Wait (bounded) for every worker to fill in its slot, then reap it. */
static void collect_workers(void)
{
    uint64_t deadline = now_ns() + s_to_ns(15);
    for (int i = 1; i <= NWORKERS; i++) {
        while (!__atomic_load_n(&SH->slot[i].done, __ATOMIC_ACQUIRE) && now_ns() < deadline) {
            int st;
            if (waitpid(WPID[i], &st, WNOHANG) == WPID[i]) {
                WPID[i] = 0;
                break;
            }
            usleep(2000);
        }
    }
    for (int i = 1; i <= NWORKERS; i++) {
        if (WPID[i] > 0) {
            if (!__atomic_load_n(&SH->slot[i].done, __ATOMIC_ACQUIRE))
                kill(WPID[i], SIGKILL);
            waitpid(WPID[i], NULL, 0);
            WPID[i] = 0;
        }
    }
}

static void abort_run(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loadgen: %s\n", msg);
    publish_counters();
    set_phase(PH_ABORT);
    finish_slot();
    __atomic_store_n(&ME->done, 1, __ATOMIC_RELEASE);
    collect_workers();
    emit_result(0, msg);
    exit(1);
}

static const char *worker_error(void)
{
    for (int s = 0; s < SH->nslots; s++)
        if (SH->slot[s].err[0])
            return SH->slot[s].err;
    return "no detail";
}

static void check_workers(void)
{
    for (int i = 1; i <= NWORKERS; i++) {
        struct slot *sl = &SH->slot[i];
        if (__atomic_load_n(&sl->done, __ATOMIC_ACQUIRE) && sl->exit_code) {
            char e[300];
            snprintf(e, sizeof e, "%s", sl->err);
            fatal("worker %d: %s", i, e);
        }
        int st;
        if (WPID[i] > 0 && waitpid(WPID[i], &st, WNOHANG) == WPID[i]) {
            WPID[i] = 0;
            abort_run("worker %d (streams) died unexpectedly (status %d)", i, st);
        }
    }
}

static int controller_loop(void)
{
    struct epoll_event evs[1024];
    int phase = PH_CONNECT;
    uint64_t deadline = T_START + s_to_ns(O.connect_timeout_s);
    uint64_t hold_until = 0;
    int stdin_added = 0;
    for (;;) {
        if (STREAMS)
            open_more();
        uint64_t t = now_ns();
        struct timespec to = {0, 5000000};
        if (phase == PH_RUN && O.rate > 0 && !STOP_SENDING && NPUBS_UP == O.publishers && NEXT_SEQ < M) {
            uint64_t due = RUN_T0 + (uint64_t)((double)NEXT_SEQ * 1e9 / O.rate);
            uint64_t wait = due > t ? due - t : 0;
            if (wait < 5000000)
                to.tv_nsec = (long)wait;
        }
        int n = epoll_pwait2(EP, evs, 1024, &to, NULL);
        if (n < 0 && errno != EINTR)
            fatal("epoll_pwait2: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            int kind = (int)(tag >> 56);
            long idx = (long)(tag & 0xffffffffffffffull);
            if (kind == K_STREAM)
                stream_event(idx, evs[i].events);
            else if (kind == K_PUB)
                pub_event((int)idx, evs[i].events);
            else if (kind == K_STDIN && phase == PH_SYNC) {
                if (read_stdin_line()) {
                    epoll_ctl(EP, EPOLL_CTL_DEL, 0, NULL);
                    stdin_added = 0;
                    hold_until = 1; /* released */
                }
            }
        }
        t = now_ns();
        publish_counters();
        if (ALARMED)
            abort_run("the whole run passed --max-seconds %.0f", O.max_s);
        if (NWORKERS)
            check_workers();

        if (phase == PH_CONNECT) {
            uint64_t up = SUM(up), failed = SUM(failed), closed = SUM(closed), joins = SUM(joins);
            if (failed)
                abort_run("%" PRIu64 " stream(s) could not connect: %s", failed, worker_error());
            if (closed)
                abort_run("the server closed %" PRIu64 " stream(s) while connecting (a connection "
                          "limit?): %s", closed, worker_error());
            if (up == (uint64_t)O.streams && !T_ALL_UP)
                T_ALL_UP = t;
            if (T_ALL_UP && O.expect_joins && joins >= JOINS_EXPECTED && !T_JOINS_DONE)
                T_JOINS_DONE = MAXOF(last_join_ns) > T_ALL_UP ? MAXOF(last_join_ns) : T_ALL_UP;
            if (T_ALL_UP && (!O.expect_joins || T_JOINS_DONE)) {
                T_CONNECTED = t;
                mark(MARK_CONNECTED);
                set_phase(PH_SYNC);
                phase = PH_SYNC;
                if (O.sync) {
                    printf("CONNECTED {\"all_up_s\": %.3f, \"joins_done_s\": %.3f, \"streams\": %ld, \"joins\": %" PRIu64 "}\n",
                           (double)(T_ALL_UP - T_START) / 1e9,
                           T_JOINS_DONE ? (double)(T_JOINS_DONE - T_START) / 1e9 : -1.0, O.streams, joins);
                    fflush(stdout);
                    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG(K_STDIN, 0)};
                    if (epoll_ctl(EP, EPOLL_CTL_ADD, 0, &sev) < 0)
                        fatal("--sync needs stdin to be a pipe or a terminal (%s)", strerror(errno));
                    stdin_added = 1;
                    deadline = t + s_to_ns(O.sync_timeout_s);
                } else {
                    hold_until = t + s_to_ns(O.hold_s);
                }
            } else if (t > deadline) {
                if (up < (uint64_t)O.streams)
                    abort_run("connect timed out after %.0f s: %" PRIu64 " of %ld streams up",
                              O.connect_timeout_s, up, O.streams);
                abort_run("joins timed out after %.0f s: %" PRIu64 " of %" PRIu64 " join announcements delivered",
                          O.connect_timeout_s, joins, JOINS_EXPECTED);
            }
        } else if (phase == PH_SYNC) {
            if (O.sync && stdin_added && t > deadline)
                abort_run("no go-ahead line on stdin within %.0f s", O.sync_timeout_s);
            if (hold_until && t >= hold_until) {
                if (SUM(closed))
                    abort_run("the server closed %" PRIu64 " idle stream(s): %s", SUM(closed), worker_error());
                if (!M) {
                    set_phase(PH_FINAL);
                    finish_slot();
                    break;
                }
                mark(MARK_RUN);
                set_phase(PH_RUN);
                phase = PH_RUN;
                for (int i = 0; i < O.publishers; i++)
                    pub_connect(i);
                deadline = t + s_to_ns(5);
                RUN_T0 = 0;
            }
        } else if (phase == PH_RUN) {
            if (!RUN_T0) {
                if (NPUBS_UP == O.publishers)
                    RUN_T0 = t;
                else if (t > deadline)
                    abort_run("publisher connections not up within 5 s");
            }
            if (RUN_T0) {
                pump(t);
                if (STOP_SENDING && !posts_in_flight()) {
                    if (!T_DRAIN_END) {
                        T_DRAIN_END = 1;
                        deadline = t + s_to_ns(O.drain_timeout_s);
                    }
                    if (SUM(uniq) >= ACKED * (uint64_t)O.streams) {
                        T_DRAIN_END = t;
                    } else if (t > deadline) {
                        DRAIN_TIMED_OUT = 1;
                        T_DRAIN_END = t;
                    } else {
                        continue;
                    }
                    set_phase(PH_FINAL);
                    finish_slot();
                    break;
                }
                uint64_t cap = s_to_ns((O.duration_s > 0 ? O.duration_s : O.publish_timeout_s) + 30);
                if (t - RUN_T0 > cap)
                    abort_run("POST answers still outstanding long after the publish window");
            }
        }
    }
    __atomic_store_n(&ME->done, 1, __ATOMIC_RELEASE);
    collect_workers();
    publish_counters();
    emit_result(1, NULL);
    return 0;
}

/* ---------------------------------------------------------------- setup */

static double num(const char *s, const char *name)
{
    char *e;
    double v = strtod(s, &e);
    if (!*s || *e || v < 0 || !isfinite(v)) {
        fprintf(stderr, "loadgen: --%s wants a non-negative number, got %s\n", name, s);
        usage(stderr);
        exit(2);
    }
    return v;
}

/* "P1,P2,...": 1 to MAX_PORTS ports into out[]; returns how many. */
static int port_list(const char *s, const char *name, int *out)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char *e;
        long v = strtol(p, &e, 10);
        if (e == p || v < 1 || v > 65535 || (*e && *e != ',') || n == MAX_PORTS) {
            fprintf(stderr, "loadgen: --%s wants 1 to %d ports 1..65535 separated by commas, got %s\n",
                    name, MAX_PORTS, s);
            exit(2);
        }
        out[n++] = (int)v;
        if (!*e)
            return n;
        p = e + 1;
    }
}

static void parse_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"streams", 1, 0, 'n'}, {"src-addrs", 1, 0, 'A'},
        {"procs", 1, 0, 'P'}, {"inflight", 1, 0, 'i'}, {"expect-joins", 0, 0, 'j'},
        {"messages", 1, 0, 'm'}, {"rate", 1, 0, 'r'}, {"duration", 1, 0, 'd'},
        {"publishers", 1, 0, 'u'}, {"connect-timeout", 1, 0, 'c'}, {"publish-timeout", 1, 0, 'T'},
        {"drain-timeout", 1, 0, 'D'}, {"sync", 0, 0, 's'}, {"sync-timeout", 1, 0, 'S'},
        {"hold", 1, 0, 'o'}, {"max-seconds", 1, 0, 'X'}, {"label", 1, 0, 'L'}, {"help", 0, 0, 'h'},
        {"transport", 1, 0, 't'}, {"ws-deflate", 0, 0, 'z'},
        {"ports", 1, 0, 'K'}, {"publish-ports", 1, 0, 'B'}, {"path", 1, 0, 'Q'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *name = "";
        for (const struct option *o = opts; o->name; o++)
            if (o->val == ch)
                name = o->name;
        switch (ch) {
        case 'H': O.host = optarg; break;
        case 'p':
            if ((O.nports = port_list(optarg, name, O.ports)) != 1)
                fatal("--port takes one port; several go in --ports");
            break;
        case 'K': O.nports = port_list(optarg, name, O.ports); break;
        case 'B': O.npub_ports = port_list(optarg, name, O.pub_ports); break;
        case 'n': O.streams = (long)num(optarg, name); break;
        case 'A': O.src_addrs = (int)num(optarg, name); break;
        case 'P': O.procs = (int)num(optarg, name); break;
        case 'i': O.inflight = (int)num(optarg, name); break;
        case 'j': O.expect_joins = 1; break;
        case 'm': O.messages = (long)num(optarg, name); break;
        case 'r': O.rate = num(optarg, name); break;
        case 'd': O.duration_s = num(optarg, name); break;
        case 'u': O.publishers = (int)num(optarg, name); break;
        case 'c': O.connect_timeout_s = num(optarg, name); break;
        case 'T': O.publish_timeout_s = num(optarg, name); break;
        case 'D': O.drain_timeout_s = num(optarg, name); break;
        case 's': O.sync = 1; break;
        case 'S': O.sync_timeout_s = num(optarg, name); break;
        case 'o': O.hold_s = num(optarg, name); break;
        case 'X': O.max_s = num(optarg, name); break;
        case 'L': O.label = optarg; break;
        case 't':
            if (strcmp(optarg, "ws") != 0 && strcmp(optarg, "sse") != 0) {
                fprintf(stderr, "loadgen: --transport is sse or ws, got %s\n", optarg);
                exit(2);
            }
            O.ws = strcmp(optarg, "ws") == 0;
            break;
        case 'z': O.ws_deflate = 1; break;
        case 'Q': O.path = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument %s\n", argv[optind]);
        exit(2);
    }
    for (const char *l = O.label; *l; l++)
        if (*l == '"' || *l == '\\' || (unsigned char)*l < 32)
            fatal("--label must not contain quotes, backslashes or control characters");
    if (O.nports > 1 && O.streams < O.nports)
        fatal("--ports: at least one stream per port, please (%d ports, %ld streams)", O.nports, O.streams);
    if (!O.npub_ports) {
        O.npub_ports = 1;
        O.pub_ports[0] = O.ports[0];
    }
    if (O.streams < 0 || O.inflight < 1 || O.publishers < 1 || O.publishers > 256)
        fatal("--streams >= 0, --inflight >= 1 and --publishers 1..256, please");
    if (O.rate > 0 && O.duration_s > 0 && O.messages == 0)
        O.messages = (long)ceil(O.rate * O.duration_s);
    if (O.duration_s > 0 && O.messages == 0)
        fatal("--duration needs --messages (an upper bound) or --rate");
    if (O.src_addrs > 254)
        fatal("--src-addrs is at most 254 (127.0.0.1..127.0.0.254)");
    if (O.procs > MAX_WORKERS)
        fatal("--procs is at most %d", MAX_WORKERS);
    if (O.ws_deflate && !O.ws)
        fatal("--ws-deflate needs --transport ws");
    if (O.path[0] != '/' || strlen(O.path) > 512 || strpbrk(O.path, " \t\r\n"))
        fatal("--path is a request target: '/', no spaces or line breaks, at most 512 bytes");
}

static long ports_per_address(void)
{
    long lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &lo, &hi) != 2)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    return hi - lo + 1;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* As many descriptors as allowed; then decide how many processes hold the streams. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    long room = (long)rl.rlim_cur - 64 - O.publishers;
    if (room < 16)
        fatal("the open-files limit (%ld) is too low: raise it with `ulimit -n`", (long)rl.rlim_cur);
    int procs = O.procs ? O.procs : (int)((O.streams + room - 1) / room);
    if (procs < 1)
        procs = 1;
    if (O.nports > 1) {
        /* Whole processes per port, so every process's figures are one port's. */
        procs = (procs + O.nports - 1) / O.nports * O.nports;
        if (O.procs && procs != O.procs)
            fatal("--procs %d is not a multiple of the %d --ports", O.procs, O.nports);
    }
    if (procs > MAX_WORKERS)
        fatal("%ld streams need %d processes at %ld open files each: raise `ulimit -n`", O.streams, procs, (long)rl.rlim_cur);
    if ((O.streams + procs - 1) / procs > room)
        fatal("%ld streams over %d process(es) is more than the open-files limit (%ld) allows: raise "
              "`ulimit -n` or use more --procs", O.streams, procs, (long)rl.rlim_cur);
    NWORKERS = procs > 1 ? procs : 0;

    /* Source addresses: one local port per stream per (source, destination) pair. */
    long per_addr = ports_per_address() - 1000;
    SRC_ADDRS = O.src_addrs ? O.src_addrs : (int)((O.streams + per_addr - 1) / (per_addr > 0 ? per_addr : 1));
    if (SRC_ADDRS < 1)
        SRC_ADDRS = 1;
    BIND_SRC = O.src_addrs > 0 || SRC_ADDRS > 1;
    if (SRC_ADDRS > 254)
        fatal("%ld streams need more than 254 source addresses", O.streams);

    /* The key is the RFC's own example (section 1.3): a load generator needs no nonce. */
    static const char ws_head[] = "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n%s\r\n";
    /* ENDPOINTS: the stream ports first (index k for block k), then publish-only ports. */
    for (int k = 0; k < O.nports + O.npub_ports; k++) {
        int port = k < O.nports ? O.ports[k] : O.pub_ports[k - O.nports];
        int found = -1;
        for (int j = 0; j < NENDPOINTS; j++)
            if (ENDPOINTS[j].port == port)
                found = j;
        if (k < O.nports && found >= 0)
            fatal("--ports names port %d twice", port);
        if (k >= O.nports) {
            if (found < 0)
                found = NENDPOINTS;
            PUB_EP[k - O.nports] = found;
            if (found < NENDPOINTS)
                continue;
        }
        struct endpoint *e = &ENDPOINTS[NENDPOINTS++];
        e->port = port;
        if (inet_pton(AF_INET, O.host, &e->addr.sin_addr) != 1)
            fatal("--host must be an IPv4 address, got %s", O.host);
        e->addr.sin_family = AF_INET;
        e->addr.sin_port = htons((uint16_t)port);
        char hp[sizeof e->hostport]; /* a copy: gcc cannot tell e->hostport from e->get_req */
        snprintf(hp, sizeof hp, "%s:%d", O.host, port);
        memcpy(e->hostport, hp, sizeof hp);
        if (O.ws) {
            e->get_len = snprintf(e->get_req, sizeof e->get_req, ws_head, hp,
                                  O.ws_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
            /* Publishers never offer compression: the events they also receive are skipped. */
            e->pub_ws_len = snprintf(e->pub_ws_req, sizeof e->pub_ws_req, ws_head, hp, "");
        } else {
            e->get_len = snprintf(e->get_req, sizeof e->get_req,
                                  "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                                  "Cache-Control: no-cache\r\n\r\n", O.path, hp);
        }
    }
    for (int k = 0; k <= O.nports; k++)
        PORT_LO[k] = (long)((uint64_t)k * (uint64_t)O.streams / (uint64_t)O.nports);

    M = (uint64_t)O.messages;
    WPS = (size_t)((M + 63) / 64);
    uint64_t streams = (uint64_t)O.streams;
    JOINS_EXPECTED = streams * (streams + 1) / 2;
    if ((double)WPS * 8.0 * (double)O.streams > 2e9)
        fatal("--messages x --streams needs more than 2 GB of bitmaps; publish fewer messages");

    int nslots = NWORKERS + 1;
    size_t shared_bytes = sizeof(struct shared) + (size_t)nslots * sizeof(struct slot);
    size_t ack_off = (shared_bytes + 63) & ~(size_t)63;
    void *mem = mmap(NULL, ack_off + WPS * 8 + 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        fatal("mmap: %s", strerror(errno));
    SH = mem;
    SH->nslots = nslots;
    SH->msgs = M;
    for (int k = 0; k < nslots; k++)
        SH->slot[k].ep = -1;
    ACK = (uint64_t *)((char *)mem + ack_off);
    ME = &SH->slot[0];

    T_START = now_ns();
    signal(SIGALRM, on_alarm);
    alarm((unsigned)ceil(O.max_s));

    PARENT = getpid();
    for (int w = 1; w <= NWORKERS; w++) {
        pid_t pid = fork();
        if (pid < 0)
            fatal("fork: %s", strerror(errno));
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            alarm(0);
            SLOT = w;
            ME = &SH->slot[w];
            S_LO = (long)((uint64_t)(w - 1) * streams / (uint64_t)NWORKERS);
            S_HI = (long)((uint64_t)w * streams / (uint64_t)NWORKERS);
            goto streams_setup;
        }
        WPID[w] = pid;
    }
    if (NWORKERS == 0) {
        S_LO = 0;
        S_HI = O.streams;
    }
streams_setup:
    mark(MARK_START);
    ME->streams = S_HI - S_LO;
    if (S_HI > S_LO && stream_ep(S_LO) == stream_ep(S_HI - 1))
        ME->ep = stream_ep(S_LO);
    EP = epoll_create1(EPOLL_CLOEXEC);
    if (EP < 0)
        fatal("epoll_create1: %s", strerror(errno));
    S_N = S_HI - S_LO;
    NEXT_OPEN = S_LO;
    if (S_N > 0) {
        STREAMS = calloc((size_t)S_N, sizeof *STREAMS);
        BITS = calloc((size_t)S_N * WPS + 1, 8);
        if (!STREAMS || !BITS)
            fatal("out of memory for %ld streams", S_N);
    }
    if (SLOT != 0)
        _exit(worker_loop());
    PUBS = calloc((size_t)O.publishers, sizeof *PUBS);
    if (!PUBS)
        fatal("out of memory");
    return controller_loop();
}
