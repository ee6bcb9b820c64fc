/* broker_bench.c - what the broker and the gateway cost: token frames per
 * second and the latency each adds, beside a direct DEALER<->ROUTER pair in
 * the same run.
 *
 *   broker_bench BROKER_BINARY [STREAMS] [TOKENS] [GATEWAY_BINARY]
 *
 * A synthetic token source (a thread in this process, used only here)
 * answers each CHAT with TOKENS token frames as fast as it can encode them,
 * then DONE. It is measured with the same client code:
 *   direct: client DEALER -> the source's ROUTER (the floor: ZeroMQ itself);
 *   broker: client DEALER -> smolmq-broker -> the source as a worker DEALER;
 * and, given GATEWAY_BINARY, as a person's client sees it:
 *   gateway: HTTP clients streaming chat completions (SSE) -> smolmq-gateway
 *            -> the same broker and source;
 *   websocket: the same over the gateway's WebSocket chat (/v1/ws), one
 *            socket per stream, as the web chat talks.
 * Throughput: STREAMS concurrent requests; latency: one request of one
 * token at a time, median and 99th percentile of 2000 round trips (500 for
 * the gateway: over HTTP each on a new connection as curl makes one, over
 * the WebSocket one socket for all, as a browser keeps its socket). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "proto.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds the threads of process pid (0: this one) have run on a CPU, from
 * the scheduler's account (/proc/PID/task/TID/schedstat, nanoseconds): what
 * a side costs, whatever else this shared machine is doing. */
static double cpu_s(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, pid ? "/proc/%d/task" : "/proc/self/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    double ns = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char f[sizeof path + sizeof e->d_name + 16];
        unsigned long long run = 0;
        snprintf(f, sizeof f, "%s/%s/schedstat", path, e->d_name);
        FILE *fp = fopen(f, "r");
        if (fp && fscanf(fp, "%llu", &run) == 1)
            ns += (double)run;
        if (fp)
            fclose(fp);
    }
    closedir(d);
    return ns * 1e-9;
}

/* The broker and gateway started here: killed at any exit, dying included. */
static pid_t children[2];

static void kill_children(void)
{
    for (int i = 0; i < 2; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
}

static void die(const char *what)
{
    fprintf(stderr, "broker_bench: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

/* Sends header, command, [job], body. */
static void send_msg(void *s, const void *route, size_t route_len, smq_cmd cmd, const uint64_t *job, const smq_buf *b)
{
    const char *name = smq_cmd_name(cmd);
    if (route && zmq_send(s, route, route_len, ZMQ_SNDMORE) < 0)
        die("send");
    zmq_send(s, SMQ_HEADER, SMQ_HEADER_LEN, ZMQ_SNDMORE);
    zmq_send(s, name, strlen(name), ZMQ_SNDMORE);
    if (job) {
        uint8_t j[8];
        smq_job_put(*job, j);
        zmq_send(s, j, 8, ZMQ_SNDMORE);
    }
    zmq_send(s, b->data, b->len, 0);
}

/* One received message, split into frames (the routing id first on a ROUTER). */
typedef struct msg {
    zmq_msg_t f[6];
    int n;
} msg;

static int recv_msg(void *s, msg *m)
{
    m->n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t *f = &m->f[m->n < 5 ? m->n : 5];
        zmq_msg_init(f);
        if (zmq_msg_recv(f, s, 0) < 0)
            return -1;
        more = zmq_msg_more(f);
        if (m->n < 5)
            m->n++;
        else
            zmq_msg_close(f);
    }
    return 0;
}

static void msg_close(msg *m)
{
    for (int i = 0; i < m->n; i++)
        zmq_msg_close(&m->f[i]);
}

/* ---- the synthetic token source ---- */

typedef struct source {
    void *ctx;
    char endpoint[128];
    int as_worker; /* 1: a DEALER worker of the broker; 0: a ROUTER clients connect to */
    uint32_t tokens;
    volatile int stop;
} source;

static void *source_run(void *arg)
{
    source *src = arg;
    void *s = zmq_socket(src->ctx, src->as_worker ? ZMQ_DEALER : ZMQ_ROUTER);
    int zero = 0, timeout = 100;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    smq_buf b = { 0 };
    if (src->as_worker) {
        if (zmq_connect(s, src->endpoint))
            die("connect");
        smq_ready r = { { "bench", 5 }, { "bench source", 12 }, { "cpu", 3 }, 4096, 4096, 0 };
        smq_ready_encode(&b, &r);
        send_msg(s, NULL, 0, SMQ_CMD_READY, NULL, &b);
    } else if (zmq_bind(s, src->endpoint)) {
        die("bind");
    }
    double next_hb = now_s();
    int32_t tok = 42;
    while (!src->stop) {
        if (src->as_worker && now_s() >= next_hb) {
            smq_worker_hb hb = { 4096, 0 };
            smq_buf_reset(&b);
            smq_worker_hb_encode(&b, &hb);
            send_msg(s, NULL, 0, SMQ_CMD_HEARTBEAT, NULL, &b);
            next_hb = now_s() + 0.5;
        }
        msg m;
        if (recv_msg(s, &m))
            continue;
        int off = src->as_worker ? 0 : 1; /* the ROUTER's routing id */
        smq_frame f[5];
        for (int i = off; i < m.n; i++)
            f[i - off] = (smq_frame){ zmq_msg_data(&m.f[i]), zmq_msg_size(&m.f[i]) };
        smq_head h;
        const char *code;
        smq_err err;
        if (smq_head_parse(f, (size_t)(m.n - off), src->as_worker ? SMQ_HOP_WORKER : SMQ_HOP_CLIENT, &h, &code, &err) ==
                0 &&
            h.cmd == SMQ_CMD_CHAT) {
            smq_chat c;
            smq_chat_init(&c);
            if (smq_chat_decode(&c, h.body, h.body_len, &err) == 0) {
                const void *route = off ? zmq_msg_data(&m.f[0]) : NULL;
                size_t route_len = off ? zmq_msg_size(&m.f[0]) : 0;
                const uint64_t *job = src->as_worker ? &h.job : NULL;
                uint32_t n = c.max_tokens ? c.max_tokens : src->tokens;
                for (uint32_t i = 0; i < n; i++) {
                    smq_token t = { c.id, i, &tok, 1, { "", 0 }, { " word", 5 } };
                    smq_buf_reset(&b);
                    smq_token_encode(&b, &t);
                    send_msg(s, route, route_len, SMQ_CMD_TOKEN, job, &b);
                }
                smq_done d = { 0 };
                d.id = c.id;
                d.seq = n;
                d.finish = (smq_str){ "length", 6 };
                d.usage.completion_tokens = n;
                smq_buf_reset(&b);
                smq_done_encode(&b, &d);
                send_msg(s, route, route_len, SMQ_CMD_DONE, job, &b);
            }
            smq_chat_free(&c);
        }
        msg_close(&m);
    }
    smq_buf_free(&b);
    zmq_close(s);
    return NULL;
}

/* ---- the client ---- */

static void send_chat(void *s, const char *id, uint32_t max_tokens, smq_buf *b)
{
    smq_chat c;
    smq_chat_init(&c);
    smq_chat_msg m = { { "user", 4 }, { "hi", 2 } };
    c.id = (smq_str){ id, (uint32_t)strlen(id) };
    c.messages = &m;
    c.n_messages = 1;
    c.max_tokens = max_tokens;
    smq_buf_reset(b);
    smq_chat_encode(b, &c);
    send_msg(s, NULL, 0, SMQ_CMD_CHAT, NULL, b);
}

/* Runs `streams` requests of `tokens` tokens at once; token frames per s. */
static double throughput(void *s, int streams, uint32_t tokens)
{
    smq_buf b = { 0 };
    char id[32];
    double t0 = now_s();
    for (int i = 0; i < streams; i++) {
        snprintf(id, sizeof id, "t%d-%f", i, t0);
        send_chat(s, id, tokens, &b);
    }
    int open = streams;
    uint64_t frames = 0;
    while (open) {
        msg m;
        if (recv_msg(s, &m))
            die("receive (is the broker running?)");
        if (m.n >= 2 && zmq_msg_size(&m.f[1]) == 4 && !memcmp(zmq_msg_data(&m.f[1]), "DONE", 4))
            open--;
        else if (m.n >= 2 && zmq_msg_size(&m.f[1]) == 5 && !memcmp(zmq_msg_data(&m.f[1]), "TOKEN", 5))
            frames++;
        else if (m.n >= 2 && zmq_msg_size(&m.f[1]) == 5 && !memcmp(zmq_msg_data(&m.f[1]), "ERROR", 5))
            die("the broker answered ERROR");
        msg_close(&m);
    }
    smq_buf_free(&b);
    return (double)frames / (now_s() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Round trips of one-token requests, one at a time: median and p99 in us. */
static void latency(void *s, int n, double *p50, double *p99)
{
    smq_buf b = { 0 };
    double *t = malloc((size_t)n * sizeof *t);
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "l%d", i);
        double t0 = now_s();
        send_chat(s, id, 1, &b);
        for (int done = 0; !done;) {
            msg m;
            if (recv_msg(s, &m))
                die("receive");
            done = m.n >= 2 && zmq_msg_size(&m.f[1]) == 4 && !memcmp(zmq_msg_data(&m.f[1]), "DONE", 4);
            msg_close(&m);
        }
        t[i] = (now_s() - t0) * 1e6;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *p50 = t[n / 2];
    *p99 = t[n * 99 / 100];
    free(t);
    smq_buf_free(&b);
}

static void *client_socket(void *ctx, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, timeout = 10000;
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(s, ep))
        die("connect");
    return s;
}

/* A port nothing listens on now: the kernel's pick for port 0. */
static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
        perror("broker_bench: a free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- the HTTP client: streamed chat completions through the gateway ---- */

/* What one response has shown so far. The token source's every token is
 * " word", so a token is one `"content":" word"` in the stream (an SSE
 * chunk's delta, or a WebSocket delta message); the text kept from the last
 * read lets a pattern that straddles two reads count. */
typedef struct sse_stream {
    int fd;
    int ws; /* a WebSocket chat: status 101, ends with its "done" message */
    uint64_t tokens;
    int status, done; /* the HTTP status; the end (SSE "data: [DONE]", WebSocket "done") seen */
    char tail[32];
    size_t tail_len;
    char first[400]; /* the response's start: its status, and an error message */
    size_t first_len;
} sse_stream;

#define TOKEN_PATTERN   "\"content\":\" word\""
#define DONE_PATTERN    "data: [DONE]"
#define WS_DONE_PATTERN "\"type\":\"done\""

static size_t count_in(const char *p, size_t n, const char *pat)
{
    size_t k = strlen(pat), c = 0;
    for (const char *q = p; n >= k && (q = memmem(q, n - (size_t)(q - p), pat, k)); q += k)
        c++;
    return c;
}

/* Reads what the socket has; -1 at its end (or on an error). */
static int sse_read(sse_stream *st)
{
    char buf[65536 + sizeof st->tail];
    memcpy(buf, st->tail, st->tail_len);
    ssize_t got = recv(st->fd, buf + st->tail_len, 65536, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (got <= 0)
        return -1;
    size_t n = st->tail_len + (size_t)got, room = sizeof st->first - 1 - st->first_len;
    if (room) { /* the status line may come in more than one read */
        size_t k = (size_t)got < room ? (size_t)got : room;
        memcpy(st->first + st->first_len, buf + st->tail_len, k);
        st->first[st->first_len += k] = 0;
        if (!st->status && st->first_len >= 12 && !memcmp(st->first, "HTTP/1.1 ", 9))
            st->status = atoi(st->first + 9);
    }
    /* The tail is shorter than the token pattern, so no token counts
     * twice; [DONE] is only a flag. */
    st->tokens += count_in(buf, n, TOKEN_PATTERN);
    st->done |= count_in(buf, n, st->ws ? WS_DONE_PATTERN : DONE_PATTERN) > 0;
    st->tail_len = n < sizeof TOKEN_PATTERN - 2 ? n : sizeof TOKEN_PATTERN - 2;
    memcpy(st->tail, buf + n - st->tail_len, st->tail_len);
    return 0;
}

static int tcp_connect(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 &&
        (connect(fd, (struct sockaddr *)&a, sizeof a) || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A connection that has sent a streamed request for `tokens` tokens. */
static int sse_open(int port, uint32_t tokens, sse_stream *st)
{
    char body[256], req[512];
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"bench\",\"stream\":true,\"max_tokens\":%u,"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                      tokens);
    int rl = snprintf(req, sizeof req,
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Connection: close\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    int fd = tcp_connect(port);
    *st = (sse_stream){ .fd = fd };
    if (fd < 0 || send(fd, req, (size_t)rl, 0) != rl) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return 0;
}

/* ---- the WebSocket client: the gateway's /v1/ws chat ---- */

/* A WebSocket open on the gateway (the handshake's answer read), or -1. */
static int ws_connect(int port)
{
    static const char req[] = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";
    int fd = tcp_connect(port);
    if (fd < 0 || send(fd, req, sizeof req - 1, 0) != (ssize_t)sizeof req - 1)
        goto fail;
    /* The server says nothing more until it is sent a chat: the answer is
     * exactly the 101 and its headers. */
    char buf[1024];
    size_t n = 0;
    while (n < sizeof buf - 1 && !memmem(buf, n, "\r\n\r\n", 4)) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        ssize_t got = poll(&pf, 1, 10000) == 1 ? recv(fd, buf + n, sizeof buf - 1 - n, 0) : -1;
        if (got <= 0)
            goto fail;
        n += (size_t)got;
    }
    buf[n] = 0;
    if (strncmp(buf, "HTTP/1.1 101", 12)) {
        fprintf(stderr, "broker_bench: the gateway refused the WebSocket:\n%s\n", buf);
        exit(1);
    }
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Sends one chat for `tokens` tokens on the socket (a masked text frame,
 * as a client must send) and starts st reading its answer. */
static int ws_chat(int fd, uint32_t tokens, sse_stream *st)
{
    char body[256], frame[300];
    int bl = snprintf(body, sizeof body,
                      "{\"type\":\"chat\",\"id\":\"c\",\"model\":\"bench\",\"max_tokens\":%u,"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                      tokens);
    static const uint8_t mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    size_t h = 0;
    frame[h++] = (char)0x81; /* FIN, text */
    if (bl < 126) {
        frame[h++] = (char)(0x80 | bl);
    } else {
        frame[h++] = (char)(0x80 | 126);
        frame[h++] = (char)(bl >> 8);
        frame[h++] = (char)bl;
    }
    memcpy(frame + h, mask, 4);
    h += 4;
    for (int i = 0; i < bl; i++)
        frame[h + (size_t)i] = (char)(body[i] ^ mask[i % 4]);
    *st = (sse_stream){ .fd = fd, .ws = 1, .status = 101 };
    return send(fd, frame, h + (size_t)bl, 0) == (ssize_t)(h + (size_t)bl) ? 0 : -1;
}

/* Reads the streams to their ends (an SSE response's close, a WebSocket
 * chat's "done": its socket stays open, and st[i].fd is left as it was);
 * dies unless each was a 200 (101) with all its tokens and its end. */
static void sse_finish(sse_stream *st, int n, uint32_t tokens)
{
    struct pollfd pf[1000];
    int fds[1000];
    for (int i = 0; i < n; i++)
        fds[i] = st[i].fd;
    for (int open = n; open;) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (st[i].fd >= 0)
                pf[k++] = (struct pollfd){ .fd = st[i].fd, .events = POLLIN };
        if (poll(pf, (nfds_t)k, 10000) <= 0) {
            fprintf(stderr, "broker_bench: the gateway sent nothing for 10 s\n");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            if (st[i].fd < 0)
                continue;
            int end = sse_read(&st[i]) < 0;
            if (end || (st[i].ws && st[i].done)) {
                if (!st[i].ws)
                    close(st[i].fd);
                st[i].fd = -1;
                open--;
            }
        }
    }
    for (int i = 0; i < n; i++)
        st[i].fd = st[i].ws ? fds[i] : -1;
    for (int i = 0; i < n; i++)
        if (st[i].status != (st[i].ws ? 101 : 200) || st[i].tokens != tokens || !st[i].done) {
            fprintf(stderr,
                    "broker_bench: a stream through the gateway: HTTP %d, %" PRIu64
                    " of %u tokens, %s; it began:\n%s\n",
                    st[i].status, st[i].tokens, tokens, st[i].done ? "[DONE]" : "no [DONE]", st[i].first);
            exit(1);
        }
}

static double sse_throughput(int port, int streams, uint32_t tokens)
{
    sse_stream st[1000];
    double t0 = now_s();
    for (int i = 0; i < streams; i++)
        if (sse_open(port, tokens, &st[i]))
            die("connect to the gateway");
    sse_finish(st, streams, tokens);
    return (double)streams * tokens / (now_s() - t0);
}

static void sse_latency(int port, int n, double *p50, double *p99)
{
    double *t = malloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++) {
        sse_stream st;
        double t0 = now_s();
        if (sse_open(port, 1, &st))
            die("connect to the gateway");
        sse_finish(&st, 1, 1);
        t[i] = (now_s() - t0) * 1e6;
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *p50 = t[n / 2];
    *p99 = t[n * 99 / 100];
    free(t);
}

/* STREAMS WebSockets, one chat of `tokens` tokens on each at once. */
static double ws_throughput(int port, int streams, uint32_t tokens)
{
    sse_stream st[1000];
    int fd[1000];
    for (int i = 0; i < streams; i++)
        if ((fd[i] = ws_connect(port)) < 0)
            die("a WebSocket to the gateway");
    double t0 = now_s();
    for (int i = 0; i < streams; i++)
        if (ws_chat(fd[i], tokens, &st[i]))
            die("send a chat on the WebSocket");
    sse_finish(st, streams, tokens);
    double t = now_s() - t0;
    for (int i = 0; i < streams; i++)
        close(fd[i]);
    return (double)streams * tokens / t;
}

/* One-token chats one after another on one WebSocket. */
static void ws_latency(int port, int n, double *p50, double *p99)
{
    double *t = malloc((size_t)n * sizeof *t);
    int fd = ws_connect(port);
    if (fd < 0)
        die("a WebSocket to the gateway");
    for (int i = 0; i < n; i++) {
        sse_stream st;
        double t0 = now_s();
        if (ws_chat(fd, 1, &st))
            die("send a chat on the WebSocket");
        sse_finish(&st, 1, 1);
        t[i] = (now_s() - t0) * 1e6;
    }
    close(fd);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *p50 = t[n / 2];
    *p99 = t[n * 99 / 100];
    free(t);
}

/* Waits until something listens on the port (the gateway has started). */
static int wait_listening(int port)
{
    for (int i = 0; i < 100; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(50000);
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: broker_bench BROKER_BINARY [STREAMS] [TOKENS] [GATEWAY_BINARY]\n");
        return 2;
    }
    int streams = argc > 2 ? atoi(argv[2]) : 8;
    uint32_t tokens = argc > 3 ? (uint32_t)atoi(argv[3]) : 20000;
    if (streams < 1 || streams > 1000 || tokens < 1)
        return fprintf(stderr, "broker_bench: STREAMS 1-1000, TOKENS >= 1\n"), 2;
    void *ctx = zmq_ctx_new();

    /* direct */
    source direct = { ctx, "", 0, tokens, 0 };
    snprintf(direct.endpoint, sizeof direct.endpoint, "tcp://127.0.0.1:%d", free_port());
    pthread_t th;
    pthread_create(&th, NULL, source_run, &direct);
    usleep(100000);
    void *c = client_socket(ctx, direct.endpoint);
    throughput(c, streams, 1000); /* warm up */
    double cpu0 = cpu_s(0);
    double direct_fps = throughput(c, streams, tokens), d50, d99;
    /* the pair's CPU per frame: the source's send and the client's receive */
    double direct_cpu = (cpu_s(0) - cpu0) / ((double)streams * tokens);
    latency(c, 2000, &d50, &d99);
    zmq_close(c);
    direct.stop = 1;
    pthread_join(th, NULL);

    /* through the broker */
    char cep[64], wep[64];
    snprintf(cep, sizeof cep, "tcp://127.0.0.1:%d", free_port());
    snprintf(wep, sizeof wep, "tcp://127.0.0.1:%d", free_port());
    atexit(kill_children);
    pid_t pid = children[0] = fork();
    if (pid == 0) {
        /* Long heartbeats: the client here does not send any while it reads. */
        execl(argv[1], argv[1], "--clients", cep, "--workers", wep, "--heartbeat-ms", "10000", (char *)NULL);
        perror(argv[1]);
        _exit(127);
    }
    source worker = { ctx, "", 1, tokens, 0 };
    snprintf(worker.endpoint, sizeof worker.endpoint, "%s", wep);
    pthread_create(&th, NULL, source_run, &worker);
    usleep(300000);
    c = client_socket(ctx, cep);
    throughput(c, streams, 1000);
    cpu0 = cpu_s(pid);
    double broker_fps = throughput(c, streams, tokens), b50, b99;
    /* the broker's alone: a receive, its bookkeeping and a send */
    double broker_cpu = (cpu_s(pid) - cpu0) / ((double)streams * tokens);
    latency(c, 2000, &b50, &b99);
    zmq_close(c);

    /* through the gateway, to the same broker and source */
    const char *gateway = argc > 4 ? argv[4] : NULL;
    double gw_tps = 0, gw_cpu = 0, gw_broker_cpu = 0, client_cpu = 0, g50 = 0, g99 = 0;
    double ws_tps = 0, ws_cpu = 0, ws_broker_cpu = 0, w50 = 0, w99 = 0;
    if (gateway) {
        int port = free_port();
        char listen[32];
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        pid_t gw = children[1] = fork();
        if (gw == 0) {
            execl(gateway, gateway, "--listen", listen, "--broker", cep, (char *)NULL);
            perror(gateway);
            _exit(127);
        }
        if (wait_listening(port))
            return fprintf(stderr, "broker_bench: %s does not listen on %s\n", gateway, listen), 1;
        sse_throughput(port, streams, 1000);
        double g0 = cpu_s(gw), b0 = cpu_s(pid), c0 = cpu_s(0);
        gw_tps = sse_throughput(port, streams, tokens);
        double all = (double)streams * tokens;
        gw_cpu = (cpu_s(gw) - g0) / all;
        gw_broker_cpu = (cpu_s(pid) - b0) / all;
        client_cpu = (cpu_s(0) - c0) / all; /* the HTTP clients and the source */
        sse_latency(port, 500, &g50, &g99);
        ws_throughput(port, streams, 1000);
        g0 = cpu_s(gw), b0 = cpu_s(pid);
        ws_tps = ws_throughput(port, streams, tokens);
        ws_cpu = (cpu_s(gw) - g0) / all;
        ws_broker_cpu = (cpu_s(pid) - b0) / all;
        ws_latency(port, 500, &w50, &w99);
    }

    kill_children();
    worker.stop = 1;
    pthread_join(th, NULL);
    zmq_ctx_term(ctx);

    printf("broker_bench: %d streams x %u token frames; one-token round trips x 2000\n", streams, tokens);
    printf("  token frames/s   direct %9.0f   through the broker %9.0f   ratio %.2f\n", direct_fps, broker_fps,
           broker_fps / direct_fps);
    printf(
        "  round trip us    direct p50 %6.1f p99 %6.1f   broker p50 %6.1f p99 %6.1f   added p50 %.1f us (ratio %.2f)\n",
        d50, d99, b50, b99, b50 - d50, b50 / d50);
    printf("  CPU us a frame   direct pair (source + client) %.2f   the broker alone %.2f   ratio %.2f\n",
           direct_cpu * 1e6, broker_cpu * 1e6, broker_cpu / direct_cpu);
    if (gateway) {
        printf("gateway: %d streamed chat completions (SSE) x %u tokens; one-token requests x 500, each on a new "
               "connection\n",
               streams, tokens);
        printf("  tokens/s         through the gateway %9.0f   against the broker's frames/s ratio %.2f\n", gw_tps,
               gw_tps / broker_fps);
        printf("  round trip us    p50 %6.1f p99 %6.1f   added to the broker's p50 %.1f us (ratio %.2f)\n", g50, g99,
               g50 - b50, g50 / b50);
        printf("  CPU us a token   the gateway %.2f   the broker %.2f   HTTP clients + source %.2f   gateway/broker "
               "ratio %.2f\n",
               gw_cpu * 1e6, gw_broker_cpu * 1e6, client_cpu * 1e6, gw_cpu / gw_broker_cpu);
        printf("websocket: %d sockets, a chat of %u tokens on each at once; one-token chats x 500 on one socket\n",
               streams, tokens);
        printf("  tokens/s         through the gateway %9.0f   against the broker's frames/s ratio %.2f\n", ws_tps,
               ws_tps / broker_fps);
        printf("  round trip us    p50 %6.1f p99 %6.1f   added to the broker's p50 %.1f us (ratio %.2f)\n", w50, w99,
               w50 - b50, w50 / b50);
        printf("  CPU us a token   the gateway %.2f   the broker %.2f   gateway/broker ratio %.2f\n", ws_cpu * 1e6,
               ws_broker_cpu * 1e6, ws_cpu / ws_broker_cpu);
    }
    return 0;
}
