/*
 * Misuse of the C API that must fail cleanly, one scenario per run: `misuse SCENARIO`.
 * tests/tests/c_api.rs runs each on 2 ranks on 2 nodes with a deadline (a hang is a failure).
 *
 * Every rank prints "FAIL rank R: <what>" for a check that failed on it, rank 0 prints
 * "PASS <what>" for the others; at the end every rank prints "DONE rank R" and the exit status
 * is non-zero if any check failed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psls.h>

static int rank = -1, failures = 0;

static void check(int ok, const char *what) {
    if (!ok) {
        failures++;
        char msg[512];
        psls_last_error(msg, sizeof msg);
        printf("FAIL rank %d: %s (last error: %s)\n", rank, what, msg);
    } else if (rank <= 0) {
        printf("PASS %s\n", what);
    }
    fflush(stdout);
}

/* `got` is `want`; the message says both. */
static void expect(int got, int want, const char *what) {
    char line[512];
    snprintf(line, sizeof line, "%s returns %s (got %d: %s)", what, psls_strerror(want), got,
             psls_strerror(got));
    check(got == want, line);
}

static psls_t *start(void) {
    psls_t *h = NULL;
    int rc = psls_init(MPI_COMM_WORLD, &h);
    if (rc != PSLS_OK || h == NULL) {
        char msg[512];
        psls_last_error(msg, sizeof msg);
        printf("FAIL rank %d: psls_init: %d (%s)\n", rank, rc, msg);
        fflush(stdout);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return h;
}

/* Ranks that disagree on psls_file_grow (one shrinks, one grows) all return an error. */
static void grow_disagree(psls_t *h) {
    psls_file_t *f = NULL;
    void *p = NULL;
    expect(psls_file_create(h, "grow-disagree", 8192, &f, &p), PSLS_OK, "psls_file_create of 8192 bytes");
    void *q = p;
    expect(psls_file_grow(f, rank == 0 ? 100 : 12288, &q), PSLS_ERR_ARG,
           "psls_file_grow to 100 bytes on rank 0 and 12288 on rank 1");
    check(q == p, "the refused grow leaves *ptr unchanged");
    void *r = NULL;
    expect(psls_file_grow(f, rank == 0 ? 12288 : 100, &r), PSLS_ERR_ARG,
           "psls_file_grow to 12288 bytes on rank 0 and 100 on rank 1");
    expect(psls_file_grow(f, rank == 0 ? 12288 : 16384, &r), PSLS_ERR_ARG,
           "psls_file_grow to 12288 bytes on rank 0 and 16384 on rank 1");
    expect(psls_file_grow(f, 12288, rank == 0 ? NULL : &r), PSLS_ERR_NULL,
           "psls_file_grow with ptr NULL on rank 0 only");
    expect(psls_file_grow(f, 12288, &r), PSLS_OK, "psls_file_grow to 12288 bytes afterwards");
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close");
}

/* Collective calls whose arguments are bad on one rank only: every rank returns an error, none
 * waits forever in the collective, and the next good call works. */
static void one_rank_refuses(psls_t *h) {
    void *a = NULL, *b = NULL;
    expect(psls_alloc(h, rank == 0 ? 0 : 4096, &a), PSLS_ERR_ARG, "psls_alloc of 0 bytes on rank 0 only");
    check(a == NULL, "the refused psls_alloc sets *ptr to NULL");
    expect(psls_alloc(h, 4096, rank == 1 ? NULL : &a), PSLS_ERR_NULL, "psls_alloc with ptr NULL on rank 1 only");
    expect(psls_alloc(h, 8192, &a), PSLS_OK, "psls_alloc of 8192 bytes afterwards");
    expect(psls_alloc(h, 4096, &b), PSLS_OK, "a second psls_alloc");
    expect(psls_free(h, rank == 1 ? (char *)a + 8 : a), PSLS_ERR_ARG, "psls_free of an interior pointer on rank 1 only");
    expect(psls_free(h, rank == 0 ? b : a), PSLS_ERR_ARG, "psls_free of different arrays on the two ranks");
    expect(psls_free(h, a), PSLS_OK, "psls_free of the array afterwards");
    expect(psls_free(h, b), PSLS_OK, "psls_free of the other array");
    expect(psls_checkpoint_now(h, rank == 0 ? 7 : PSLS_CKPT_MEMORY), PSLS_ERR_ARG,
           "psls_checkpoint_now of kind 7 on rank 0 only");
    psls_file_t *f = NULL, *g = NULL;
    void *p = NULL;
    uint64_t size = 0;
    expect(psls_file_create(h, rank == 1 ? "" : "one-rank", 4096, &f, &p), PSLS_ERR_ARG,
           "psls_file_create with an empty name on rank 1 only");
    expect(psls_file_open(h, "one-rank", &f, &p, &size), PSLS_ERR_NOT_FOUND, "the refused create made no file");
    expect(psls_file_create(h, "one-rank", 4096, rank == 0 ? NULL : &f, &p), PSLS_ERR_NULL,
           "psls_file_create with f NULL on rank 0 only");
    expect(psls_file_create(h, rank == 0 ? "one-rank" : "other-rank", 4096, &f, &p), PSLS_ERR_ARG,
           "psls_file_create with different names on the two ranks");
    expect(psls_file_open(h, "other-rank", &f, &p, &size), PSLS_ERR_NOT_FOUND, "the refused create made no file either");
    expect(psls_file_create(h, "one-rank", rank == 0 ? 4096 : 8192, &f, &p), PSLS_ERR_ARG,
           "psls_file_create with different sizes on the two ranks");
    expect(psls_file_create(h, "one-rank", 4096, &f, &p), PSLS_OK, "psls_file_create afterwards");
    expect(psls_file_create(h, rank == 0 ? "one-rank" : "other-rank", 4096, &g, &p), PSLS_ERR_EXISTS,
           "psls_file_create of an existing name on rank 0 only");
    expect(psls_file_open(h, rank == 0 ? "one-rank" : "other-rank", &g, &p, &size), PSLS_ERR_NOT_FOUND,
           "psls_file_open of a missing name on rank 1 only");
    expect(psls_file_open(h, rank == 0 ? NULL : "one-rank", &g, &p, &size), PSLS_ERR_NULL,
           "psls_file_open with name NULL on rank 0 only");
    psls_file_t *bad = (psls_file_t *)&size;
    expect(psls_file_flush(rank == 1 ? bad : f), PSLS_ERR_NOT_INIT, "psls_file_flush of a bad handle on rank 1 only");
    psls_file_t *closing = rank == 0 ? bad : f;
    expect(psls_file_close(&closing), PSLS_ERR_NOT_INIT, "psls_file_close of a bad handle on rank 0 only");
    expect(psls_file_close(rank == 1 ? NULL : &f), PSLS_ERR_NULL, "psls_file_close(NULL) on rank 1 only");
    check(f != NULL, "the refused psls_file_close leaves the handle");
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close afterwards");
}

/* A second psls_init on a live handle fails and leaves the handle alone. */
static void second_init(psls_t *h) {
    psls_t *h2 = h;
    expect(psls_init(MPI_COMM_WORLD, &h2), PSLS_ERR_OTHER, "a second psls_init(MPI_COMM_WORLD, &h) on a live h");
    check(h2 == h, "the refused psls_init leaves *out unchanged (the live handle)");
    psls_t *h3 = (psls_t *)&h2;
    expect(psls_init_f(MPI_Comm_c2f(MPI_COMM_WORLD), &h3), PSLS_ERR_OTHER, "a second psls_init_f while one is live");
    check(h3 == (psls_t *)&h2, "the refused psls_init_f leaves *out unchanged");
    expect(psls_barrier(h), PSLS_OK, "psls_barrier on the live handle afterwards");
}

/* A grow that cannot be mapped leaves the file mapped and usable; so does a create. */
static void grow_huge(psls_t *h) {
    psls_file_t *f = NULL;
    unsigned char *p = NULL;
    expect(psls_file_create(h, "grow-huge", 8192, &f, (void **)&p), PSLS_OK, "psls_file_create of 8192 bytes");
    if (rank == 0)
        p[0] = 42, p[8191] = 43;
    expect(psls_barrier(h), PSLS_OK, "psls_barrier");
    void *q = p;
    expect(psls_file_grow(f, UINT64_MAX, &q), PSLS_ERR_NO_MEMORY, "psls_file_grow to UINT64_MAX bytes");
    check(q == p, "the failed grow leaves *ptr unchanged");
    expect(psls_file_grow(f, UINT64_C(1) << 62, &q), PSLS_ERR_NO_MEMORY, "psls_file_grow to 2^62 bytes");
    uint64_t size = 0;
    expect(psls_file_size(f, &size), PSLS_OK, "psls_file_size after the failed grows");
    check(size == 8192, "the file still has 8192 bytes");
    check(p[0] == 42 && p[8191] == 43, "the file is still mapped at its address, with its bytes");
    expect(psls_barrier(h), PSLS_OK, "psls_barrier");
    if (rank == 1)
        p[100] = 7;
    expect(psls_barrier(h), PSLS_OK, "psls_barrier");
    check(p[100] == 7, "the file still takes stores");
    expect(psls_file_grow(f, 1 << 20, &q), PSLS_OK, "psls_file_grow to 1 MiB (a move) afterwards");
    p = q;
    check(p[0] == 42 && p[8191] == 43 && p[100] == 7, "the moved file has its bytes");
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close");

    void *r = NULL;
    expect(psls_file_create(h, "too-big", UINT64_C(1) << 62, &f, &r), PSLS_ERR_NO_MEMORY,
           "psls_file_create of 2^62 bytes");
    uint64_t n = 0;
    expect(psls_file_open(h, "too-big", &f, &r, &n), PSLS_ERR_NOT_FOUND,
           "psls_file_open of the file whose create failed (it was not left behind)");
}

/* A copy of a closed file handle (or of a finalized runtime handle) stays dead, even when a
 * new handle takes its place. */
static void stale(psls_t *h) {
    psls_file_t *f = NULL, *g = NULL;
    void *p = NULL;
    uint64_t size = 0;
    expect(psls_file_create(h, "stale-a", 4096, &f, &p), PSLS_OK, "psls_file_create of stale-a");
    psls_file_t *old = f;
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close of stale-a");
    expect(psls_file_create(h, "stale-b", 8192, &g, &p), PSLS_OK, "psls_file_create of stale-b");
    expect(psls_file_size(old, &size), PSLS_ERR_NOT_INIT, "psls_file_size through the copy of closed stale-a");
    expect(psls_file_close(&old), PSLS_ERR_NOT_INIT, "psls_file_close through the copy of closed stale-a");
    expect(psls_file_size(g, &size), PSLS_OK, "psls_file_size of stale-b");
    check(size == 8192, "stale-b is still open, with 8192 bytes");
    expect(psls_file_close(&g), PSLS_OK, "psls_file_close of stale-b");
    for (int i = 0; i < 4; i++) {
        expect(psls_file_open(h, "stale-a", &f, &p, &size), PSLS_OK, "psls_file_open of stale-a");
        expect(psls_file_size(old, &size), PSLS_ERR_NOT_INIT, "psls_file_size through the old copy");
        expect(psls_file_close(&f), PSLS_OK, "psls_file_close");
    }

    psls_t *saved = h;
    expect(psls_finalize(&h), PSLS_OK, "psls_finalize");
    h = start();
    int r = -1;
    expect(psls_rank(saved, &r), PSLS_ERR_NOT_INIT,
           "psls_rank through the copy of the finalized handle, after a new psls_init");
    expect(psls_rank(h, &r), PSLS_OK, "psls_rank through the new handle");
    expect(psls_finalize(&h), PSLS_OK, "psls_finalize of the new handle");
}

/* A file that is mapped already is not mapped a second time. */
static void double_open(psls_t *h) {
    psls_file_t *f = NULL, *g = (psls_file_t *)&f;
    void *p = NULL, *q = &p;
    uint64_t size = 99;
    expect(psls_file_create(h, "twice", 4096, &f, &p), PSLS_OK, "psls_file_create of twice");
    expect(psls_file_open(h, "twice", &g, &q, &size), PSLS_ERR_ARG, "psls_file_open of a file psls_file_create mapped");
    check(g == NULL && q == NULL && size == 0, "the refused open sets *f, *ptr, *size to NULL, NULL, 0");
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close");
    expect(psls_file_open(h, "twice", &f, &p, &size), PSLS_OK, "psls_file_open after the close");
    expect(psls_file_open(h, "twice", &g, &q, &size), PSLS_ERR_ARG, "a second psls_file_open of an open file");
    expect(psls_file_close(&f), PSLS_OK, "psls_file_close");
}

/* Bad PFS file names are bad arguments. */
static void bad_names(psls_t *h) {
    psls_file_t *f = NULL;
    void *p = NULL;
    uint64_t size = 0;
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    expect(psls_file_create(h, "a/b", 4096, &f, &p), PSLS_ERR_ARG, "psls_file_create(\"a/b\")");
    expect(psls_file_create(h, "..", 4096, &f, &p), PSLS_ERR_ARG, "psls_file_create(\"..\")");
    expect(psls_file_create(h, ".", 4096, &f, &p), PSLS_ERR_ARG, "psls_file_create(\".\")");
    expect(psls_file_create(h, longname, 4096, &f, &p), PSLS_ERR_ARG, "psls_file_create of a 299-byte name");
    expect(psls_file_open(h, "a/b", &f, &p, &size), PSLS_ERR_NOT_FOUND, "psls_file_open(\"a/b\")");
}

/* psls_init_f with Fortran communicators that do not exist. */
static void bad_fortran_comm(void) {
    psls_t *h = NULL;
    const MPI_Fint bad[] = {123456, -1, 3};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[128];
        snprintf(what, sizeof what, "psls_init_f(%d)", (int)bad[i]);
        h = (psls_t *)&h;
        expect(psls_init_f(bad[i], &h), PSLS_ERR_ARG, what);
        check(h == NULL, "the refused psls_init_f sets *out to NULL");
    }
    expect(psls_init_f(MPI_Comm_c2f(MPI_COMM_NULL), &h), PSLS_ERR_ARG, "psls_init_f(MPI_COMM_NULL)");
    /* The application's error handler is the one it had. */
    MPI_Errhandler eh;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &eh);
    check(eh == MPI_ERRORS_ARE_FATAL, "MPI_COMM_WORLD's error handler is still MPI_ERRORS_ARE_FATAL");
    MPI_Errhandler_free(&eh);
    expect(psls_init_f(MPI_Comm_c2f(MPI_COMM_WORLD), &h), PSLS_OK, "psls_init_f(MPI_COMM_WORLD) afterwards");
    expect(psls_barrier(h), PSLS_OK, "psls_barrier");
    expect(psls_finalize(&h), PSLS_OK, "psls_finalize");
}

/* psls_init with a configuration that is bad on some ranks only: every rank gets an error. */
static void init_only(void) {
    psls_t *h = (psls_t *)&h;
    int rc = psls_init(MPI_COMM_WORLD, &h);
    char msg[512];
    psls_last_error(msg, sizeof msg);
    printf("INIT rank %d: rc %d (%s)\n", rank, rc, rc == PSLS_OK ? "" : msg);
    fflush(stdout);
    if (rc == PSLS_OK)
        psls_finalize(&h);
    else
        check(h == NULL, "the failed psls_init sets *out to NULL");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: misuse SCENARIO\n");
        return 2;
    }
    const char *s = argv[1];
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        printf("FAIL MPI_Init_thread\n");
        return 2;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (!strcmp(s, "bad-fortran-comm")) {
        bad_fortran_comm();
    } else if (!strcmp(s, "init")) {
        init_only();
    } else if (!strcmp(s, "stale")) {
        stale(start()); /* finalizes itself */
    } else {
        psls_t *h = start();
        if (!strcmp(s, "grow-disagree"))
            grow_disagree(h);
        else if (!strcmp(s, "one-rank-refuses"))
            one_rank_refuses(h);
        else if (!strcmp(s, "second-init"))
            second_init(h);
        else if (!strcmp(s, "grow-huge"))
            grow_huge(h);
        else if (!strcmp(s, "double-open"))
            double_open(h);
        else if (!strcmp(s, "bad-names"))
            bad_names(h);
        else {
            printf("FAIL unknown scenario %s\n", s);
            failures++;
        }
        expect(psls_finalize(&h), PSLS_OK, "psls_finalize");
    }
    printf("DONE rank %d\n", rank);
    fflush(stdout);
    MPI_Finalize();
    return failures > 0 ? 1 : 0;
}
