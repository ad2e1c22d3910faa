/* Link-time values of MPI handles that are macros in mpi.h and that rsmpi does not export.
 * Open MPI defines them as addresses of global objects and MPICH as integer constants, so only
 * a C compiler can produce them portably. */
#include <mpi.h>

MPI_Op psls_mpi_op_replace(void) { return MPI_REPLACE; }
MPI_Op psls_mpi_op_no_op(void) { return MPI_NO_OP; }
MPI_Op psls_mpi_op_sum(void) { return MPI_SUM; }
MPI_Op psls_mpi_op_bor(void) { return MPI_BOR; }
MPI_Op psls_mpi_op_band(void) { return MPI_BAND; }
MPI_Op psls_mpi_op_max(void) { return MPI_MAX; }
MPI_Op psls_mpi_op_min(void) { return MPI_MIN; }
MPI_Datatype psls_mpi_byte(void) { return MPI_BYTE; }
MPI_Datatype psls_mpi_uint64(void) { return MPI_UINT64_T; }
MPI_Comm psls_mpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Comm psls_mpi_comm_null(void) { return MPI_COMM_NULL; }
MPI_Win psls_mpi_win_null(void) { return MPI_WIN_NULL; }
MPI_Info psls_mpi_info_null(void) { return MPI_INFO_NULL; }
MPI_Request psls_mpi_request_null(void) { return MPI_REQUEST_NULL; }
MPI_Errhandler psls_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
int psls_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
int psls_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
int psls_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
int psls_mpi_thread_single(void) { return MPI_THREAD_SINGLE; }
int psls_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
int psls_mpi_max_library_version_string(void) { return MPI_MAX_LIBRARY_VERSION_STRING; }
