/* test.h - the unit-test harness: one header, no framework.
 *
 * A test program defines `static void test_name(void)` functions and runs them
 * from main() with TEST_RUN(test_name). Checks record failures with file:line
 * and the values involved; a test that records none passes. Every test prints
 * exactly one line,
 *     PASS <program>/<test>
 *     FAIL <program>/<test>: <first failure>
 *     SKIP <program>/<test>: <reason>
 * which tests/run.sh counts into the suite's closing "N passed, N failed" line.
 * main() ends with `return test_done();` (exit status 1 if anything failed).
 */
#ifndef SMQ_TEST_H
#define SMQ_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *test_program = "test";
static int test_failures_total; /* failed tests in this program */
static int test_cur_failed;     /* checks failed in the running test */
static int test_cur_skipped;
static char test_cur_msg[1024];

static inline void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void test_fail(const char *file, int line, const char *fmt, ...)
{
    if (test_cur_failed++ == 0) {
        int n = snprintf(test_cur_msg, sizeof test_cur_msg, "%s:%d: ", file, line);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(test_cur_msg + n, sizeof test_cur_msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    /* Every failure goes to stderr, the first one also on the FAIL line. */
    fprintf(stderr, "  %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Marks the running test skipped (and returns from it via the caller). */
static inline void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void test_skip(const char *fmt, ...)
{
    test_cur_skipped = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(test_cur_msg, sizeof test_cur_msg, fmt, ap);
    va_end(ap);
}

/* Sets (value) or unsets (NULL) the environment variable name, and returns
 * what it was (for test_env_restore): a switch a test flips for one
 * backend must not lose a setting the run was given (the CUDA host
 * emulation sets SMQ_CUBLAS, for one). */
static inline char *test_env_swap(const char *name, const char *value)
{
    const char *was = getenv(name);
    char *kept = was ? strdup(was) : NULL;
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
    return kept;
}

static inline void test_env_restore(const char *name, char *kept)
{
    free(test_env_swap(name, kept));
    free(kept);
}

/* Programs built for the CUDA host emulation (tests/emu) report as
 * "emu:<program>", apart from the same tests on a GPU; run with their
 * threads taking turns in reverse (SMQ_EMU_ORDER=reverse), as
 * "emu-reverse:<program>". */
static inline const char *test_prefix(void)
{
#ifdef SMQ_CUDA_EMU
    const char *order = getenv("SMQ_EMU_ORDER");
    return order && !strcmp(order, "reverse") ? "emu-reverse:" : "emu:";
#else
    return "";
#endif
}

/* Whether the test's full name (as reported: "emu:cuda_backend_gpu/test_routes")
 * is in the comma-separated list SMQ_TEST_SKIP: tests a run leaves out on
 * purpose (make test leaves the slowest of the emulated backend's out;
 * make test-emu runs them), reported as skipped. */
static inline int test_left_out(const char *name)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s/%s", test_prefix(), test_program, name);
    size_t n = strlen(full);
    for (const char *p = getenv("SMQ_TEST_SKIP"); p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, full, n))
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static inline void test_run(void (*fn)(void), const char *name)
{
    if (test_left_out(name)) {
        printf("SKIP %s%s/%s: left out of this run (SMQ_TEST_SKIP)\n", test_prefix(), test_program, name);
        fflush(stdout);
        return;
    }
    test_cur_failed = 0;
    test_cur_skipped = 0;
    test_cur_msg[0] = 0;
    fn();
    if (test_cur_failed) {
        printf("FAIL %s%s/%s: %s\n", test_prefix(), test_program, name, test_cur_msg);
        test_failures_total++;
    } else if (test_cur_skipped) {
        printf("SKIP %s%s/%s: %s\n", test_prefix(), test_program, name, test_cur_msg);
    } else {
        printf("PASS %s%s/%s\n", test_prefix(), test_program, name);
    }
    fflush(stdout);
}

static inline int test_done(void)
{
    return test_failures_total ? 1 : 0;
}

#define TEST_RUN(fn) test_run(fn, #fn)

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            test_fail(__FILE__, __LINE__, "check failed: %s", #cond);                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                           \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                                                                \
    } while (0)

#define CHECK_INT(a, b)                                                                                                \
    do {                                                                                                               \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                                          \
        if (va_ != vb_)                                                                                                \
            test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", #a, va_, #b, vb_);                        \
    } while (0)

#define CHECK_STR(a, b)                                                                                                \
    do {                                                                                                               \
        const char *sa_ = (a), *sb_ = (b);                                                                             \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                                                                     \
            test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", #a, sa_ ? sa_ : "(null)",                   \
                      sb_ ? sb_ : "(null)");                                                                           \
    } while (0)

/* Checks that haystack contains needle (for error messages). */
#define CHECK_CONTAINS(hay, needle)                                                                                    \
    do {                                                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                                                        \
        if (!h_ || !strstr(h_, n_))                                                                                    \
            test_fail(__FILE__, __LINE__, "%s == \"%s\" does not contain \"%s\"", #hay, h_ ? h_ : "(null)", n_);       \
    } while (0)

/* xorshift64*: reproducible random test data without libc's rand(). */
static uint64_t test_rng_state = 0x9E3779B97F4A7C15ull;

static inline uint64_t test_rng(void)
{
    test_rng_state ^= test_rng_state >> 12;
    test_rng_state ^= test_rng_state << 25;
    test_rng_state ^= test_rng_state >> 27;
    return test_rng_state * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, 1), and standard normal (Box-Muller), from test_rng. */
static inline double test_unit(void)
{
    return (double)(test_rng() >> 11) * 0x1.0p-53;
}

static inline double test_normal(void)
{
    return sqrt(-2 * log(1 - test_unit())) * cos(6.283185307179586 * test_unit());
}

/* Reads a whole file into a malloc'd buffer; NULL (with a FAIL) when it cannot. */
static inline void *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        test_fail(__FILE__, __LINE__, "cannot open %s", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        test_fail(__FILE__, __LINE__, "cannot read %s", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Directory of the test data (tests/data), overridable by SMQ_TEST_DATA. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("SMQ_TEST_DATA");
    return d && *d ? d : "tests/data";
}

#endif
