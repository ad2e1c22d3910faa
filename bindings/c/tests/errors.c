/*
 * Every error path of the C API, checked from C: NULL handles and out-pointers, bad sizes, an
 * unknown file, calls before psls_init and after psls_finalize, a foreign pointer to
 * psls_free, psls_strerror of every code, and psls_last_error's truncation.
 *
 * Run on 2 ranks on 2 nodes (tests/tests/c_api.rs does: mpirun -n 2, PSLS_VIRTUAL_NODES=2).
 * Rank 0 prints one "PASS <what>" line per check, and every rank prints "FAIL <what>" for a
 * check that failed on it; the exit status is non-zero if any check failed. With
 * ERRORS_SHOW_MESSAGES set, rank 0 also prints the detailed message of each expected error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psls.h>

static int rank = -1; /* -1 until MPI is initialized: then every rank prints */
static int failures = 0, checks = 0;

static void check(int ok, const char *what) {
    checks++;
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

/* `call` returned `want`, with a detailed message naming `fn` when it is an error. */
static void expect(int got, int want, const char *fn, const char *what) {
    char buf[1024], line[1200];
    int ok = got == want;
    if (ok && want != PSLS_OK) {
        psls_last_error(buf, sizeof buf);
        ok = strncmp(buf, fn, strlen(fn)) == 0;
        if (!ok)
            printf("     rank %d: last error does not name %s: \"%s\"\n", rank, fn, buf);
        else if (rank <= 0 && getenv("ERRORS_SHOW_MESSAGES") != NULL)
            printf("     message: %s\n", buf);
    }
    snprintf(line, sizeof line, "%s returns %s (got %d: %s)", what,
             want == PSLS_OK ? "PSLS_OK" : psls_strerror(want), got, psls_strerror(got));
    check(ok, line);
}

#define EXPECT(call, want, fn, what) expect((call), (want), (fn), (what))

static void last(char *buf, size_t len) {
    int rc = psls_last_error(buf, len);
    if (rc != PSLS_OK) {
        printf("psls_last_error failed: %d\n", rc);
        exit(3);
    }
}

int main(int argc, char **argv) {
    psls_t *h = NULL, *h2 = (psls_t *)&h; /* h2: garbage until psls_init sets it */
    int x = 0;
    uint64_t u = 0, e = 0;
    void *p = &x;
    psls_file_t *f = NULL;
    char buf[256];

    /* ---- messages ---- */
    const char *seen[PSLS_ERR_OTHER + 1];
    for (int c = PSLS_OK; c <= PSLS_ERR_OTHER; c++) {
        const char *m = psls_strerror(c);
        int fresh = m != NULL && strcmp(m, "unknown error code") != 0;
        for (int d = 0; fresh && d < c; d++)
            fresh = strcmp(seen[d], m) != 0;
        seen[c] = m ? m : "";
        snprintf(buf, sizeof buf, "psls_strerror(%d) is its own message: \"%s\"", c, seen[c]);
        check(fresh, buf);
    }
    check(!strcmp(psls_strerror(-1), "unknown error code"), "psls_strerror(-1) is \"unknown error code\"");
    check(!strcmp(psls_strerror(PSLS_ERR_OTHER + 1), "unknown error code"),
          "psls_strerror(PSLS_ERR_OTHER + 1) is \"unknown error code\"");
    EXPECT(psls_last_error(NULL, 10), PSLS_ERR_NULL, "", "psls_last_error(NULL, 10)");
    EXPECT(psls_last_error(buf, 0), PSLS_ERR_ARG, "", "psls_last_error(buf, 0)");
    last(buf, sizeof buf);
    check(buf[0] == '\0', "psls_last_error is empty before any call failed (its own failures do not count)");

    /* ---- before MPI and before psls_init ---- */
    EXPECT(psls_init(MPI_COMM_WORLD, &h2), PSLS_ERR_MPI, "psls_init", "psls_init before MPI_Init_thread");
    check(h2 == NULL, "a failed psls_init sets *out to NULL");
    EXPECT(psls_init_f(0, &h2), PSLS_ERR_MPI, "psls_init_f", "psls_init_f before MPI_Init_thread");
    EXPECT(psls_init(MPI_COMM_WORLD, NULL), PSLS_ERR_NULL, "psls_init", "psls_init with out NULL");
    EXPECT(psls_rank(NULL, &x), PSLS_ERR_NULL, "psls_rank", "psls_rank before psls_init (NULL handle)");
    EXPECT(psls_size(NULL, &x), PSLS_ERR_NULL, "psls_size", "psls_size with a NULL handle");
    EXPECT(psls_node(NULL, &x), PSLS_ERR_NULL, "psls_node", "psls_node with a NULL handle");
    EXPECT(psls_num_nodes(NULL, &x), PSLS_ERR_NULL, "psls_num_nodes", "psls_num_nodes with a NULL handle");
    EXPECT(psls_node_name(NULL, 0, buf, sizeof buf), PSLS_ERR_NULL, "psls_node_name", "psls_node_name with a NULL handle");
    EXPECT(psls_buddy(NULL, 0, &x), PSLS_ERR_NULL, "psls_buddy", "psls_buddy with a NULL handle");
    EXPECT(psls_local_range(NULL, 10, &u, &e), PSLS_ERR_NULL, "psls_local_range", "psls_local_range with a NULL handle");
    EXPECT(psls_alloc(NULL, 8, &p), PSLS_ERR_NULL, "psls_alloc", "psls_alloc with a NULL handle");
    EXPECT(psls_free(NULL, p), PSLS_ERR_NULL, "psls_free", "psls_free with a NULL handle");
    EXPECT(psls_barrier(NULL), PSLS_ERR_NULL, "psls_barrier", "psls_barrier with a NULL handle");
    EXPECT(psls_mutex_create(NULL, &x), PSLS_ERR_NULL, "psls_mutex_create", "psls_mutex_create with a NULL handle");
    EXPECT(psls_mutex_lock(NULL, 0), PSLS_ERR_NULL, "psls_mutex_lock", "psls_mutex_lock with a NULL handle");
    EXPECT(psls_mutex_unlock(NULL, 0), PSLS_ERR_NULL, "psls_mutex_unlock", "psls_mutex_unlock with a NULL handle");
    EXPECT(psls_protect(NULL, "x", &x, sizeof x), PSLS_ERR_NULL, "psls_protect", "psls_protect with a NULL handle");
    EXPECT(psls_checkpoint(NULL), PSLS_ERR_NULL, "psls_checkpoint", "psls_checkpoint with a NULL handle");
    EXPECT(psls_checkpoint_now(NULL, PSLS_CKPT_MEMORY), PSLS_ERR_NULL, "psls_checkpoint_now", "psls_checkpoint_now with a NULL handle");
    EXPECT(psls_restarted(NULL, &x, &e), PSLS_ERR_NULL, "psls_restarted", "psls_restarted with a NULL handle");
    psls_stats_t st;
    EXPECT(psls_stats(NULL, &st), PSLS_ERR_NULL, "psls_stats", "psls_stats with a NULL handle");
    EXPECT(psls_file_create(NULL, "f", 8, &f, &p), PSLS_ERR_NULL, "psls_file_create", "psls_file_create with a NULL handle");
    EXPECT(psls_file_open(NULL, "f", &f, &p, &u), PSLS_ERR_NULL, "psls_file_open", "psls_file_open with a NULL handle");
    EXPECT(psls_file_grow(NULL, 8, &p), PSLS_ERR_NULL, "psls_file_grow", "psls_file_grow with a NULL file");
    EXPECT(psls_file_size(NULL, &u), PSLS_ERR_NULL, "psls_file_size", "psls_file_size with a NULL file");
    EXPECT(psls_file_flush(NULL), PSLS_ERR_NULL, "psls_file_flush", "psls_file_flush with a NULL file");
    EXPECT(psls_file_close(NULL), PSLS_ERR_NULL, "psls_file_close", "psls_file_close(NULL)");
    f = NULL;
    EXPECT(psls_file_close(&f), PSLS_ERR_NULL, "psls_file_close", "psls_file_close of a NULL file");
    EXPECT(psls_finalize(NULL), PSLS_ERR_NULL, "psls_finalize", "psls_finalize(NULL)");
    EXPECT(psls_finalize(&h), PSLS_ERR_NULL, "psls_finalize", "psls_finalize before psls_init (NULL handle)");
    /* A pointer that is not a handle is never dereferenced. */
    psls_t *fake = (psls_t *)&x;
    EXPECT(psls_rank(fake, &x), PSLS_ERR_NOT_INIT, "psls_rank", "psls_rank with a pointer that is not a handle");
    EXPECT(psls_finalize(&fake), PSLS_ERR_NOT_INIT, "psls_finalize", "psls_finalize of a pointer that is not a handle");
    psls_file_t *fake_file = (psls_file_t *)&x;
    EXPECT(psls_file_size(fake_file, &u), PSLS_ERR_NOT_INIT, "psls_file_size", "psls_file_size with a pointer that is not a file");

    /* ---- psls_last_error: full and truncated ---- */
    char full[512], small[8];
    last(full, sizeof full);
    check(strstr(full, "psls_file_size") != NULL && strlen(full) > 20, "psls_last_error gives the detailed message of the last failure");
    last(small, 5);
    check(strlen(small) == 4 && strncmp(small, full, 4) == 0, "psls_last_error truncates to len - 1 bytes and NUL-terminates");
    last(small, 1);
    check(small[0] == '\0', "psls_last_error with len 1 gives the empty string");
    last(small, sizeof small);
    check(strncmp(small, full, sizeof small - 1) == 0, "psls_last_error does not change the message it reports");

    /* ---- MPI, then psls_init ---- */
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        printf("FAIL MPI_Init_thread\n");
        return 2;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    EXPECT(psls_init(MPI_COMM_NULL, &h), PSLS_ERR_ARG, "psls_init", "psls_init(MPI_COMM_NULL)");
    EXPECT(psls_init_f(MPI_Comm_c2f(MPI_COMM_WORLD), &h), PSLS_OK, "psls_init_f",
           "psls_init_f(MPI_Comm_c2f(MPI_COMM_WORLD))");
    if (h == NULL) {
        printf("FAIL rank %d: no handle: stopping\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    h2 = (psls_t *)&x;
    EXPECT(psls_init(MPI_COMM_WORLD, &h2), PSLS_ERR_OTHER, "psls_init", "a second psls_init while one is live");
    check(h2 == (psls_t *)&x, "the second psls_init leaves *out as it was");

    /* ---- NULL out-pointers, bad arguments ---- */
    int size = 0, nodes = 0, node = -1;
    EXPECT(psls_rank(h, NULL), PSLS_ERR_NULL, "psls_rank", "psls_rank(h, NULL)");
    EXPECT(psls_size(h, NULL), PSLS_ERR_NULL, "psls_size", "psls_size(h, NULL)");
    EXPECT(psls_node(h, NULL), PSLS_ERR_NULL, "psls_node", "psls_node(h, NULL)");
    EXPECT(psls_num_nodes(h, NULL), PSLS_ERR_NULL, "psls_num_nodes", "psls_num_nodes(h, NULL)");
    EXPECT(psls_size(h, &size), PSLS_OK, "", "psls_size");
    EXPECT(psls_num_nodes(h, &nodes), PSLS_OK, "", "psls_num_nodes");
    EXPECT(psls_node(h, &node), PSLS_OK, "", "psls_node");
    check(size == 2 && nodes == 2 && node >= 0 && node < nodes, "2 ranks on 2 nodes");
    EXPECT(psls_node_name(h, 0, NULL, 10), PSLS_ERR_NULL, "psls_node_name", "psls_node_name with buf NULL");
    EXPECT(psls_node_name(h, -1, buf, sizeof buf), PSLS_ERR_ARG, "psls_node_name", "psls_node_name of node -1");
    EXPECT(psls_node_name(h, nodes, buf, sizeof buf), PSLS_ERR_ARG, "psls_node_name", "psls_node_name of node num_nodes");
    EXPECT(psls_node_name(h, 0, buf, 2), PSLS_ERR_ARG, "psls_node_name", "psls_node_name into a buffer too small");
    EXPECT(psls_node_name(h, 0, buf, 0), PSLS_ERR_ARG, "psls_node_name", "psls_node_name into a buffer of 0 bytes");
    EXPECT(psls_node_name(h, 0, buf, sizeof buf), PSLS_OK, "", "psls_node_name of node 0");
    check(!strcmp(buf, "vnode0"), "node 0 is vnode0");
    EXPECT(psls_buddy(h, 99, &x), PSLS_ERR_ARG, "psls_buddy", "psls_buddy of node 99");
    EXPECT(psls_buddy(h, 0, NULL), PSLS_ERR_NULL, "psls_buddy", "psls_buddy(h, 0, NULL)");
    EXPECT(psls_buddy(h, 0, &x), PSLS_OK, "", "psls_buddy of node 0");
    check(x == 1, "node 0's buddy is node 1");
    EXPECT(psls_local_range(h, 11, NULL, &e), PSLS_ERR_NULL, "psls_local_range", "psls_local_range with begin NULL");
    EXPECT(psls_local_range(h, 11, &u, NULL), PSLS_ERR_NULL, "psls_local_range", "psls_local_range with end NULL");
    EXPECT(psls_local_range(h, 11, &u, &e), PSLS_OK, "", "psls_local_range of 11 items");
    check(rank == 0 ? (u == 0 && e == 6) : (u == 6 && e == 11), "11 items: rank 0 gets [0, 6), rank 1 [6, 11)");
    EXPECT(psls_stats(h, NULL), PSLS_ERR_NULL, "psls_stats", "psls_stats(h, NULL)");
    EXPECT(psls_restarted(h, NULL, &e), PSLS_ERR_NULL, "psls_restarted", "psls_restarted with restarted NULL");
    EXPECT(psls_restarted(h, &x, NULL), PSLS_ERR_NULL, "psls_restarted", "psls_restarted with epoch NULL");
    EXPECT(psls_restarted(h, &x, &e), PSLS_OK, "", "psls_restarted");
    check(x == 0 && e == 0, "a fresh run has not restarted (0, epoch 0)");
    EXPECT(psls_checkpoint_now(h, 7), PSLS_ERR_ARG, "psls_checkpoint_now", "psls_checkpoint_now of kind 7");

    /* ---- global memory ---- */
    p = &x;
    EXPECT(psls_alloc(h, 8, NULL), PSLS_ERR_NULL, "psls_alloc", "psls_alloc(h, 8, NULL)");
    EXPECT(psls_alloc(h, 0, &p), PSLS_ERR_ARG, "psls_alloc", "psls_alloc of 0 bytes");
    check(p == NULL, "a failed psls_alloc sets *ptr to NULL");
    EXPECT(psls_alloc(h, UINT64_C(1) << 62, &p), PSLS_ERR_NO_MEMORY, "psls_alloc", "psls_alloc of 2^62 bytes");
    last(full, sizeof full);
    check(strstr(full, "PSLS_SVM_SIZE") != NULL, "the message of a huge psls_alloc says to raise PSLS_SVM_SIZE");
    double *a = NULL;
    EXPECT(psls_alloc(h, 1000 * sizeof(double), (void **)&a), PSLS_OK, "", "psls_alloc of 1000 doubles");
    a[rank] = 1.5 + rank;
    EXPECT(psls_barrier(h), PSLS_OK, "", "psls_barrier");
    check(a[0] == 1.5 && a[1] == 2.5, "every rank sees every rank's stores after a barrier");
    EXPECT(psls_barrier(h), PSLS_OK, "", "psls_barrier");
    EXPECT(psls_free(h, NULL), PSLS_ERR_NULL, "psls_free", "psls_free(h, NULL)");
    EXPECT(psls_free(h, &x), PSLS_ERR_ARG, "psls_free", "psls_free of a foreign pointer");
    EXPECT(psls_free(h, a + 1), PSLS_ERR_ARG, "psls_free", "psls_free of a pointer into an array");
    EXPECT(psls_free(h, a), PSLS_OK, "", "psls_free of the array");
    EXPECT(psls_free(h, a), PSLS_ERR_ARG, "psls_free", "psls_free of an array freed already");

    /* ---- global mutexes ---- */
    int id = -1;
    EXPECT(psls_mutex_lock(h, 0), PSLS_ERR_ARG, "psls_mutex_lock", "psls_mutex_lock of a mutex never created");
    EXPECT(psls_mutex_create(h, NULL), PSLS_ERR_NULL, "psls_mutex_create", "psls_mutex_create(h, NULL)");
    EXPECT(psls_mutex_create(h, &id), PSLS_OK, "", "psls_mutex_create");
    check(id == 0, "the first mutex is 0");
    EXPECT(psls_mutex_lock(h, -1), PSLS_ERR_ARG, "psls_mutex_lock", "psls_mutex_lock(h, -1)");
    EXPECT(psls_mutex_unlock(h, 1), PSLS_ERR_ARG, "psls_mutex_unlock", "psls_mutex_unlock of a mutex never created");
    EXPECT(psls_mutex_unlock(h, id), PSLS_ERR_OTHER, "psls_mutex_unlock", "psls_mutex_unlock of a mutex this rank does not hold");
    EXPECT(psls_mutex_lock(h, id), PSLS_OK, "", "psls_mutex_lock");
    EXPECT(psls_mutex_unlock(h, id), PSLS_OK, "", "psls_mutex_unlock");

    /* ---- private state ---- */
    uint64_t counter = 5;
    EXPECT(psls_protect(h, NULL, &counter, sizeof counter), PSLS_ERR_NULL, "psls_protect", "psls_protect with name NULL");
    EXPECT(psls_protect(h, "counter", NULL, sizeof counter), PSLS_ERR_NULL, "psls_protect", "psls_protect with ptr NULL");
    EXPECT(psls_protect(h, "counter", &counter, 0), PSLS_ERR_ARG, "psls_protect", "psls_protect of 0 bytes");
    EXPECT(psls_protect(h, "", &counter, sizeof counter), PSLS_ERR_ARG, "psls_protect", "psls_protect with an empty name");
    EXPECT(psls_protect(h, "bad\xff", &counter, sizeof counter), PSLS_ERR_ARG, "psls_protect", "psls_protect with a name that is not UTF-8");
    EXPECT(psls_protect(h, "counter", &counter, sizeof counter), PSLS_OK, "", "psls_protect");
    check(counter == 5, "psls_protect in a fresh run keeps the value");

    /* ---- mapped files, before any checkpoint ---- */
    u = 99;
    EXPECT(psls_file_open(h, "no-such-file", &f, &p, &u), PSLS_ERR_NOT_FOUND, "psls_file_open", "psls_file_open of an unknown file");
    check(f == NULL && p == NULL && u == 0, "a failed psls_file_open sets *f, *ptr and *size to NULL, NULL, 0");
    EXPECT(psls_file_open(h, NULL, &f, &p, &u), PSLS_ERR_NULL, "psls_file_open", "psls_file_open with name NULL");
    EXPECT(psls_file_open(h, "no-such-file", NULL, &p, &u), PSLS_ERR_NULL, "psls_file_open", "psls_file_open with f NULL");
    EXPECT(psls_file_create(h, "c-api", 4096, &f, NULL), PSLS_ERR_NULL, "psls_file_create", "psls_file_create with ptr NULL");
    unsigned char *bytes = NULL;
    EXPECT(psls_file_create(h, "c-api", 4096, &f, (void **)&bytes), PSLS_OK, "", "psls_file_create of 4096 bytes");
    psls_file_t *f2 = NULL;
    void *p2 = NULL;
    EXPECT(psls_file_create(h, "c-api", 4096, &f2, &p2), PSLS_ERR_EXISTS, "psls_file_create", "psls_file_create of a file that exists");
    if (rank == 0)
        bytes[0] = 42, bytes[4095] = 43;
    EXPECT(psls_barrier(h), PSLS_OK, "", "psls_barrier");
    EXPECT(psls_file_size(f, NULL), PSLS_ERR_NULL, "psls_file_size", "psls_file_size(f, NULL)");
    EXPECT(psls_file_size(f, &u), PSLS_OK, "", "psls_file_size");
    check(u == 4096, "the file has 4096 bytes");
    EXPECT(psls_file_grow(f, 100, &p), PSLS_ERR_ARG, "psls_file_grow", "psls_file_grow to a smaller size");
    EXPECT(psls_file_grow(f, 8192, NULL), PSLS_ERR_NULL, "psls_file_grow", "psls_file_grow with ptr NULL");
    EXPECT(psls_file_grow(f, rank == 0 ? 8192 : 6000, &p), PSLS_ERR_ARG, "psls_file_grow", "psls_file_grow with sizes that differ between ranks");
    EXPECT(psls_file_grow(f, 8192, &p), PSLS_OK, "", "psls_file_grow to 8192 bytes (in place)");
    check(p == bytes, "growing within the reserved room keeps the address");
    EXPECT(psls_file_grow(f, 1 << 20, &p), PSLS_OK, "", "psls_file_grow to 1 MiB (a move: flushed and mapped again)");
    bytes = p;
    if (!(bytes[0] == 42 && bytes[4095] == 43 && bytes[8191] == 0 && bytes[(1 << 20) - 1] == 0))
        printf("     rank %d: moved file: bytes 0, 4095, 8191, end = %d %d %d %d\n", rank, bytes[0],
               bytes[4095], bytes[8191], bytes[(1 << 20) - 1]);
    check(bytes[0] == 42 && bytes[4095] == 43 && bytes[8191] == 0 && bytes[(1 << 20) - 1] == 0,
          "the moved file keeps its bytes, and its new bytes are zero");
    EXPECT(psls_barrier(h), PSLS_OK, "", "psls_barrier"); /* every rank checked before the store */
    if (rank == 1)
        bytes[(1 << 20) - 1] = 44;
    EXPECT(psls_barrier(h), PSLS_OK, "", "psls_barrier");
    EXPECT(psls_file_flush(f), PSLS_OK, "", "psls_file_flush");
    psls_file_t *stale = f;
    EXPECT(psls_file_close(&f), PSLS_OK, "", "psls_file_close");
    check(f == NULL, "psls_file_close sets *f to NULL");
    EXPECT(psls_file_size(stale, &u), PSLS_ERR_NOT_INIT, "psls_file_size", "psls_file_size of a closed file");
    EXPECT(psls_file_close(&stale), PSLS_ERR_NOT_INIT, "psls_file_close", "psls_file_close of a closed file");
    EXPECT(psls_file_open(h, "c-api", &f, (void **)&bytes, &u), PSLS_OK, "", "psls_file_open of the file");
    check(u == (1 << 20) && bytes[0] == 42 && bytes[4095] == 43 && bytes[(1 << 20) - 1] == 44,
          "the file kept its size and bytes across close and open");

    /* ---- after a checkpoint, files are published by permanent checkpoints ---- */
    EXPECT(psls_checkpoint(h), PSLS_OK, "", "psls_checkpoint");
    EXPECT(psls_file_flush(f), PSLS_ERR_CHECKPOINT, "psls_file_flush", "psls_file_flush in a job that checkpoints");
    EXPECT(psls_file_grow(f, 1 << 22, &p), PSLS_ERR_CHECKPOINT, "psls_file_grow", "psls_file_grow beyond its room in a job that checkpoints");
    EXPECT(psls_file_grow(f, (1 << 20) + 4096, &p), PSLS_OK, "", "psls_file_grow within its room in a job that checkpoints");
    EXPECT(psls_checkpoint_now(h, PSLS_CKPT_PERMANENT), PSLS_OK, "", "psls_checkpoint_now(PSLS_CKPT_PERMANENT)");
    EXPECT(psls_checkpoint_now(h, PSLS_CKPT_MEMORY), PSLS_OK, "", "psls_checkpoint_now(PSLS_CKPT_MEMORY)");
    EXPECT(psls_stats(h, &st), PSLS_OK, "", "psls_stats");
    check(st.read_faults + st.write_faults > 0, "the counters saw faults");
    /* Left open: psls_finalize closes it. */

    /* ---- after psls_finalize ---- */
    psls_t *saved = h;
    EXPECT(psls_finalize(&h), PSLS_OK, "", "psls_finalize (with a file still open)");
    check(h == NULL, "psls_finalize sets *h to NULL");
    EXPECT(psls_rank(saved, &x), PSLS_ERR_NOT_INIT, "psls_rank", "psls_rank with a finalized handle");
    EXPECT(psls_alloc(saved, 8, &p), PSLS_ERR_NOT_INIT, "psls_alloc", "psls_alloc with a finalized handle");
    EXPECT(psls_file_size(f, &u), PSLS_ERR_NOT_INIT, "psls_file_size", "psls_file_size of a file psls_finalize closed");
    EXPECT(psls_finalize(&saved), PSLS_ERR_NOT_INIT, "psls_finalize", "psls_finalize of a finalized handle");
    EXPECT(psls_finalize(&h), PSLS_ERR_NULL, "psls_finalize", "psls_finalize of the NULL it left");

    MPI_Finalize();
    EXPECT(psls_init(MPI_COMM_WORLD, &h), PSLS_ERR_MPI, "psls_init", "psls_init after MPI_Finalize");

    if (rank == 0)
        printf("errors: %d checks, %d failed on rank 0\n", checks, failures);
    if (failures > 0)
        printf("FAIL rank %d: %d of %d checks failed\n", rank, failures, checks);
    return failures > 0 ? 1 : 0;
}
