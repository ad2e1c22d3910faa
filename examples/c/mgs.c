/*
 * Modified Gram-Schmidt on a global matrix, with checkpoints: examples/src/mgs.rs in C.
 *
 * The matrix A (--rows x --vectors, vector j contiguous) lives in one global array, and the
 * vectors are distributed over the ranks in blocks (psls_local_range). Step j: the owner of
 * vector j normalizes it (q_j); after a barrier, every rank orthogonalizes its own vectors
 * k > j against q_j. A becomes Q in place. Every --every vectors, at the head of the loop, the
 * program calls psls_checkpoint; the loop index is protected private state (psls_protect), so
 * a restarted run goes on from the last checkpoint. At the end rank 0 checks that Q is
 * orthonormal and prints a checksum of Q's bits: the same from run to run, crashed and
 * restarted or not, and the same as the Rust example's for the same size.
 *
 * The arithmetic is the Rust example's, operation for operation, so the bits agree: compile
 * without -ffast-math, and with -ffp-contract=off (no fused multiply-adds).
 *
 *   mpicc -O2 -ffp-contract=off mgs.c $(pkg-config --cflags --libs psls) -o mgs-c
 *   psls-launch -n 4 --virtual-nodes 4 -- ./mgs-c --rows 1024 --vectors 48 --every 4
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <psls.h>

static const char *USAGE =
    "usage: mgs [--rows M] [--vectors N] [--every F] [--crash-at J --crash-rank R]\n"
    "\n"
    "Modified Gram-Schmidt of an M x N matrix (default 4096 x 64) in PSLS global memory, with a\n"
    "memory checkpoint every F vectors (default 4; 0: none). Prints a checksum of Q that is the same\n"
    "from run to run, and fails if Q is not orthonormal.\n"
    "\n"
    "  --crash-at J --crash-rank R   (testing) rank R aborts at the head of step J, unless this run\n"
    "                                is a restart: the job dies, and running it again restarts from\n"
    "                                the last checkpoint";

struct opts {
    uint64_t rows, vectors, every;
    int crash; /* --crash-at and --crash-rank given */
    uint64_t crash_at, crash_rank;
};

/* A whole number, or -1 with a message. */
static int number(const char *name, const char *v, uint64_t *out) {
    char *end = NULL;
    if (v == NULL) {
        fprintf(stderr, "mgs: %s needs a value\n\n%s\n", name, USAGE);
        return -1;
    }
    if (v[0] < '0' || v[0] > '9') {
        fprintf(stderr, "mgs: %s \"%s\": expected a whole number\n\n%s\n", name, v, USAGE);
        return -1;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (*end != '\0') {
        fprintf(stderr, "mgs: %s \"%s\": expected a whole number\n\n%s\n", name, v, USAGE);
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}

/* 0: run; 1: help printed; 2: bad arguments. */
static int parse(int argc, char **argv, struct opts *o) {
    int have_at = 0, have_rank = 0;
    o->rows = 4096;
    o->vectors = 64;
    o->every = 4;
    o->crash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *slot = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("%s\n", USAGE);
            return 1;
        } else if (!strcmp(a, "--rows")) {
            slot = &o->rows;
        } else if (!strcmp(a, "--vectors")) {
            slot = &o->vectors;
        } else if (!strcmp(a, "--every")) {
            slot = &o->every;
        } else if (!strcmp(a, "--crash-at")) {
            slot = &o->crash_at;
            have_at = 1;
        } else if (!strcmp(a, "--crash-rank")) {
            slot = &o->crash_rank;
            have_rank = 1;
        } else {
            fprintf(stderr, "mgs: unknown option \"%s\"\n\n%s\n", a, USAGE);
            return 2;
        }
        if (number(a, v, slot) != 0)
            return 2;
        i++;
    }
    if (o->rows == 0 || o->vectors == 0 || o->vectors > o->rows) {
        fprintf(stderr, "mgs: need 1 <= vectors <= rows (got %" PRIu64 " vectors of %" PRIu64 " rows)\n\n%s\n",
                o->vectors, o->rows, USAGE);
        return 2;
    }
    if (have_at != have_rank) {
        fprintf(stderr, "mgs: --crash-at and --crash-rank go together\n\n%s\n", USAGE);
        return 2;
    }
    o->crash = have_at;
    return 0;
}

/* The deterministic initial matrix: a well-conditioned pseudo-random value per element. */
static double initial(uint64_t i, uint64_t j) {
    uint64_t x = (i * UINT64_C(0x9E3779B97F4A7C15)) ^ (j * UINT64_C(0xC2B2AE3D27D4EB4F));
    x ^= x >> 31;
    x *= UINT64_C(0xBF58476D1CE4E5B9);
    x ^= x >> 29;
    double u = (double)(x >> 11) / (double)(UINT64_C(1) << 53);
    return u - 0.5 + (i == j ? 4.0 : 0.0);
}

/* Prints a PSLS failure of rank `rank` with its detailed message. */
static int failed(int rank, const char *what, int rc) {
    char msg[1024];
    psls_last_error(msg, sizeof msg);
    fprintf(stderr, "mgs: rank %d: %s: %s (%s)\n", rank, what, psls_strerror(rc), msg);
    return rc;
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != PSLS_OK)                                                                        \
            return failed(rank, #call, rc_);                                                       \
    } while (0)

/* `x` as Rust's {:.3e} prints it: 1.234e-5, not 1.234e-05. */
static void rust_exp(double x, char *buf, size_t len) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%.3e", x);
    char *e = strchr(tmp, 'e');
    if (e == NULL) {
        snprintf(buf, len, "%s", tmp);
        return;
    }
    *e = '\0';
    int exp = atoi(e + 1);
    snprintf(buf, len, "%se%d", tmp, exp);
}

/* The algorithm; 0 and *ok on success, else a PSLS code. */
static int run(psls_t *h, const struct opts *o, int *ok) {
    int rank = -1;
    CHECK(psls_rank(h, &rank));
    const uint64_t m = o->rows, n = o->vectors;
    double *a = NULL;
    CHECK(psls_alloc(h, m * n * sizeof(double), (void **)&a));
    uint64_t first = 0, last = 0; /* this rank's vectors: [first, last) */
    CHECK(psls_local_range(h, n, &first, &last));
    uint64_t next = 0;
    uint64_t shape[2] = {m, n};
    CHECK(psls_protect(h, "next", &next, sizeof next));
    CHECK(psls_protect(h, "shape", shape, sizeof shape));
    int restarted = 0;
    uint64_t epoch = 0;
    CHECK(psls_restarted(h, &restarted, &epoch));
    if (restarted && (shape[0] != m || shape[1] != n)) {
        fprintf(stderr,
                "mgs: rank %d: checkpoint: this run restarts a %" PRIu64 " x %" PRIu64
                " run: give it --rows %" PRIu64 " --vectors %" PRIu64
                ", or set PSLS_CKPT_NAME to start a separate one\n",
                rank, shape[0], shape[1], shape[0], shape[1]);
        return PSLS_ERR_CHECKPOINT;
    }
    if (!restarted) {
        for (uint64_t j = first; j < last; j++)
            for (uint64_t i = 0; i < m; i++)
                a[j * m + i] = initial(i, j);
    } else if (rank == 0) {
        printf("mgs: restarted from checkpoint %" PRIu64 " at vector %" PRIu64 "\n", epoch, next);
    }
    CHECK(psls_barrier(h));
    double *q = malloc(m * sizeof(double)), *v = malloc(m * sizeof(double));
    if (q == NULL || v == NULL) {
        fprintf(stderr, "mgs: rank %d: out of memory\n", rank);
        free(q);
        free(v);
        return PSLS_ERR_OTHER;
    }
    uint64_t checkpoints = 0;
    int rc = PSLS_OK;
    for (uint64_t j = next; j < n && rc == PSLS_OK; j++) {
        if (o->every > 0 && j % o->every == 0) {
            next = j;
            if ((rc = psls_checkpoint(h)) != PSLS_OK) {
                failed(rank, "psls_checkpoint(h)", rc);
                break;
            }
            checkpoints++;
        }
        if (o->crash && j == o->crash_at && (uint64_t)rank == o->crash_rank && !restarted) {
            fprintf(stderr, "mgs: rank %d crashing at vector %" PRIu64 " (--crash-at)\n", rank, j);
            abort();
        }
        if (j >= first && j < last) {
            memcpy(q, &a[j * m], m * sizeof(double));
            double s = 0.0;
            for (uint64_t i = 0; i < m; i++)
                s += q[i] * q[i];
            double norm = sqrt(s);
            for (uint64_t i = 0; i < m; i++)
                q[i] /= norm;
            memcpy(&a[j * m], q, m * sizeof(double));
        }
        if ((rc = psls_barrier(h)) != PSLS_OK) {
            failed(rank, "psls_barrier(h)", rc);
            break;
        }
        memcpy(q, &a[j * m], m * sizeof(double));
        for (uint64_t k = (first > j + 1 ? first : j + 1); k < last; k++) {
            memcpy(v, &a[k * m], m * sizeof(double));
            double r = 0.0;
            for (uint64_t i = 0; i < m; i++)
                r += q[i] * v[i];
            for (uint64_t i = 0; i < m; i++)
                v[i] -= r * q[i];
            memcpy(&a[k * m], v, m * sizeof(double));
        }
        if ((rc = psls_barrier(h)) != PSLS_OK) {
            failed(rank, "psls_barrier(h)", rc);
            break;
        }
    }
    free(q);
    free(v);
    if (rc != PSLS_OK)
        return rc;
    *ok = 1;
    if (rank == 0) {
        double worst = 0.0;
        for (uint64_t i = 0; i < n; i++) {
            for (uint64_t j = i; j < n; j++) {
                double d = 0.0;
                for (uint64_t r = 0; r < m; r++)
                    d += a[i * m + r] * a[j * m + r];
                double want = i == j ? 1.0 : 0.0;
                double err = fabs(d - want);
                if (err > worst)
                    worst = err;
            }
        }
        uint64_t hash = UINT64_C(0xcbf29ce484222325);
        for (uint64_t i = 0; i < m * n; i++) {
            uint64_t bits;
            memcpy(&bits, &a[i], sizeof bits);
            hash = (hash ^ bits) * UINT64_C(0x100000001b3);
        }
        *ok = worst < 1e-9;
        char err[64];
        rust_exp(worst, err, sizeof err);
        printf("mgs: %" PRIu64 " x %" PRIu64 ", checkpoint every %" PRIu64 " vectors (%" PRIu64
               " taken in this run), orthogonality error %s (%s), checksum %016" PRIx64 "\n",
               m, n, o->every, checkpoints, err, *ok ? "ok" : "FAILED", hash);
        fflush(stdout);
    }
    CHECK(psls_barrier(h));
    CHECK(psls_free(h, a));
    return PSLS_OK;
}

int main(int argc, char **argv) {
    struct opts o;
    int p = parse(argc, argv, &o);
    if (p != 0)
        return p == 1 ? 0 : 2;
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "mgs: MPI_Init_thread failed\n");
        return 2;
    }
    psls_t *h = NULL;
    int rc = psls_init(MPI_COMM_WORLD, &h);
    if (rc != PSLS_OK) {
        int rank = -1;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        failed(rank, "psls_init", rc);
        MPI_Finalize();
        return 2;
    }
    int ok = 0;
    rc = run(h, &o, &ok);
    if (rc != PSLS_OK) {
        /* A failed collective leaves the ranks out of step: end the whole job now. */
        MPI_Abort(MPI_COMM_WORLD, 1);
        return 1;
    }
    if ((rc = psls_finalize(&h)) != PSLS_OK) {
        failed(-1, "psls_finalize", rc);
        MPI_Finalize();
        return 2;
    }
    MPI_Finalize();
    return ok ? 0 : 1;
}
