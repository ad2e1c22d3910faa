! The PSLS Fortran module: explicit BIND(C) interfaces to the C API (bindings/c/include/psls.h)
! and MPI-style wrappers with a trailing ierr argument.
!
!   use psls
!   type(c_ptr) :: h
!   real(c_double), pointer :: a(:)
!   call psls_init(MPI_COMM_WORLD, h, ierr)
!   call psls_alloc_real8(h, n, a, ierr)
!
! Conventions (see docs/fortran.md):
! - Every wrapper is a subroutine whose last argument, ierr, receives PSLS_OK (0) or one of the
!   PSLS_ERR_* codes. ierr is optional: when it is absent and the call fails, the wrapper
!   prints the error (the code's meaning and the detailed message) to standard error and stops
!   the program with ERROR STOP, as MPI's default error handler does.
! - Handles (the runtime, a mapped file) are type(c_ptr). They are owned by the caller:
!   psls_finalize and psls_file_close release them and set them to c_null_ptr.
! - Communicators are Fortran MPI handles (integer, MPI_Fint); with mpi_f08 pass comm%MPI_VAL.
! - Ranks, node indices and mutex ids count from 0, as in MPI. psls_local_range returns a
!   1-based inclusive range (first:last), empty when first > last.
! - Counts and sizes accept integer(4) or integer(8) (generic interfaces); byte counts and
!   offsets that come back are integer(8).
! - Strings going in are trimmed and NUL-terminated here; strings coming back are copied into
!   the caller's character variable, blank-padded (or truncated to its length).
! - Global arrays and mapped files come back as Fortran array pointers (c_f_pointer) into the
!   global address space: the same address on every rank. Never DEALLOCATE them; release
!   arrays with psls_free and files with psls_file_close.
!
! This file is part of PSLS; it needs only a Fortran 2008 compiler (ISO_C_BINDING) and links
! against libpsls (the C library), which in turn needs MPI.
module psls
  use, intrinsic :: iso_c_binding, only: c_int, c_int64_t, c_size_t, c_intptr_t, c_double, &
       c_char, c_ptr, c_null_ptr, c_null_char, c_associated, c_loc, c_f_pointer
  use, intrinsic :: iso_fortran_env, only: error_unit
  implicit none
  private

  public :: c_ptr, c_null_ptr, c_associated, c_loc, c_f_pointer, c_double, c_int64_t, c_int

  ! Error codes (psls.h).
  integer, parameter, public :: PSLS_OK = 0
  integer, parameter, public :: PSLS_ERR_NULL = 1
  integer, parameter, public :: PSLS_ERR_ARG = 2
  integer, parameter, public :: PSLS_ERR_NOT_INIT = 3
  integer, parameter, public :: PSLS_ERR_CONFIG = 4
  integer, parameter, public :: PSLS_ERR_MPI = 5
  integer, parameter, public :: PSLS_ERR_NO_MEMORY = 6
  integer, parameter, public :: PSLS_ERR_NOT_FOUND = 7
  integer, parameter, public :: PSLS_ERR_EXISTS = 8
  integer, parameter, public :: PSLS_ERR_IO = 9
  integer, parameter, public :: PSLS_ERR_CHECKPOINT = 10
  integer, parameter, public :: PSLS_ERR_PANIC = 11
  integer, parameter, public :: PSLS_ERR_OTHER = 12

  ! Checkpoint kinds for psls_checkpoint_now.
  integer, parameter, public :: PSLS_CKPT_MEMORY = 0
  integer, parameter, public :: PSLS_CKPT_PERMANENT = 1

  ! Counters of this rank's shared virtual memory (psls_stats_t).
  type, bind(C), public :: psls_stats_t
     integer(c_int64_t) :: read_faults = 0
     integer(c_int64_t) :: write_faults = 0
     integer(c_int64_t) :: fetches = 0
     integer(c_int64_t) :: invalidations_sent = 0
     integer(c_int64_t) :: invalidations_received = 0
     integer(c_int64_t) :: bytes_moved = 0
     integer(c_int64_t) :: pages_loaded = 0
     integer(c_int64_t) :: pages_flushed = 0
  end type psls_stats_t

  public :: psls_init, psls_finalize
  public :: psls_rank, psls_size, psls_node, psls_num_nodes, psls_node_name, psls_buddy
  public :: psls_local_range
  public :: psls_alloc, psls_alloc_real8, psls_alloc_real8_2d, psls_alloc_int8
  public :: psls_free, psls_free_ptr, psls_free_real8, psls_free_real8_2d, psls_free_int8
  public :: psls_file_create, psls_file_open, psls_file_grow, psls_file_size
  public :: psls_file_flush, psls_file_close
  public :: psls_barrier, psls_mutex_create, psls_mutex_lock, psls_mutex_unlock
  public :: psls_protect, psls_checkpoint, psls_checkpoint_now, psls_restarted
  public :: psls_stats, psls_strerror, psls_last_error, psls_error_message

  ! ---------------------------------------------------------------------------------------
  ! The C API, one explicit interface per function (psls.h). Names are c_psls_*; the linker
  ! names are the C ones.
  ! ---------------------------------------------------------------------------------------
  interface
     function c_psls_init_f(comm, out) bind(C, name="psls_init_f") result(rc)
       import :: c_int, c_ptr
       integer(c_int), value :: comm
       type(c_ptr), intent(out) :: out
       integer(c_int) :: rc
     end function c_psls_init_f

     function c_psls_finalize(h) bind(C, name="psls_finalize") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), intent(inout) :: h
       integer(c_int) :: rc
     end function c_psls_finalize

     function c_psls_rank(h, rank) bind(C, name="psls_rank") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: rank
       integer(c_int) :: rc
     end function c_psls_rank

     function c_psls_size(h, size) bind(C, name="psls_size") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: size
       integer(c_int) :: rc
     end function c_psls_size

     function c_psls_node(h, node) bind(C, name="psls_node") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: node
       integer(c_int) :: rc
     end function c_psls_node

     function c_psls_num_nodes(h, n) bind(C, name="psls_num_nodes") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: n
       integer(c_int) :: rc
     end function c_psls_num_nodes

     function c_psls_node_name(h, node, buf, len) bind(C, name="psls_node_name") result(rc)
       import :: c_int, c_ptr, c_char, c_size_t
       type(c_ptr), value :: h
       integer(c_int), value :: node
       character(kind=c_char), intent(out) :: buf(*)
       integer(c_size_t), value :: len
       integer(c_int) :: rc
     end function c_psls_node_name

     function c_psls_buddy(h, node, buddy) bind(C, name="psls_buddy") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), value :: node
       integer(c_int), intent(out) :: buddy
       integer(c_int) :: rc
     end function c_psls_buddy

     function c_psls_local_range(h, n, begin, end) bind(C, name="psls_local_range") result(rc)
       import :: c_int, c_ptr, c_int64_t
       type(c_ptr), value :: h
       integer(c_int64_t), value :: n
       integer(c_int64_t), intent(out) :: begin, end
       integer(c_int) :: rc
     end function c_psls_local_range

     function c_psls_alloc(h, bytes, ptr) bind(C, name="psls_alloc") result(rc)
       import :: c_int, c_ptr, c_int64_t
       type(c_ptr), value :: h
       integer(c_int64_t), value :: bytes
       type(c_ptr), intent(out) :: ptr
       integer(c_int) :: rc
     end function c_psls_alloc

     function c_psls_free(h, ptr) bind(C, name="psls_free") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       type(c_ptr), value :: ptr
       integer(c_int) :: rc
     end function c_psls_free

     function c_psls_file_create(h, name, size, f, ptr) bind(C, name="psls_file_create") &
          result(rc)
       import :: c_int, c_ptr, c_int64_t, c_char
       type(c_ptr), value :: h
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int64_t), value :: size
       type(c_ptr), intent(out) :: f, ptr
       integer(c_int) :: rc
     end function c_psls_file_create

     function c_psls_file_open(h, name, f, ptr, size) bind(C, name="psls_file_open") result(rc)
       import :: c_int, c_ptr, c_int64_t, c_char
       type(c_ptr), value :: h
       character(kind=c_char), intent(in) :: name(*)
       type(c_ptr), intent(out) :: f, ptr
       integer(c_int64_t), intent(out) :: size
       integer(c_int) :: rc
     end function c_psls_file_open

     function c_psls_file_grow(f, new_size, ptr) bind(C, name="psls_file_grow") result(rc)
       import :: c_int, c_ptr, c_int64_t
       type(c_ptr), value :: f
       integer(c_int64_t), value :: new_size
       type(c_ptr), intent(out) :: ptr
       integer(c_int) :: rc
     end function c_psls_file_grow

     function c_psls_file_size(f, size) bind(C, name="psls_file_size") result(rc)
       import :: c_int, c_ptr, c_int64_t
       type(c_ptr), value :: f
       integer(c_int64_t), intent(out) :: size
       integer(c_int) :: rc
     end function c_psls_file_size

     function c_psls_file_flush(f) bind(C, name="psls_file_flush") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: f
       integer(c_int) :: rc
     end function c_psls_file_flush

     function c_psls_file_close(f) bind(C, name="psls_file_close") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), intent(inout) :: f
       integer(c_int) :: rc
     end function c_psls_file_close

     function c_psls_barrier(h) bind(C, name="psls_barrier") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int) :: rc
     end function c_psls_barrier

     function c_psls_mutex_create(h, id) bind(C, name="psls_mutex_create") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: id
       integer(c_int) :: rc
     end function c_psls_mutex_create

     function c_psls_mutex_lock(h, id) bind(C, name="psls_mutex_lock") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), value :: id
       integer(c_int) :: rc
     end function c_psls_mutex_lock

     function c_psls_mutex_unlock(h, id) bind(C, name="psls_mutex_unlock") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), value :: id
       integer(c_int) :: rc
     end function c_psls_mutex_unlock

     function c_psls_protect(h, name, ptr, len) bind(C, name="psls_protect") result(rc)
       import :: c_int, c_ptr, c_int64_t, c_char
       type(c_ptr), value :: h
       character(kind=c_char), intent(in) :: name(*)
       type(c_ptr), value :: ptr
       integer(c_int64_t), value :: len
       integer(c_int) :: rc
     end function c_psls_protect

     function c_psls_checkpoint(h) bind(C, name="psls_checkpoint") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int) :: rc
     end function c_psls_checkpoint

     function c_psls_checkpoint_now(h, kind) bind(C, name="psls_checkpoint_now") result(rc)
       import :: c_int, c_ptr
       type(c_ptr), value :: h
       integer(c_int), value :: kind
       integer(c_int) :: rc
     end function c_psls_checkpoint_now

     function c_psls_restarted(h, restarted, epoch) bind(C, name="psls_restarted") result(rc)
       import :: c_int, c_ptr, c_int64_t
       type(c_ptr), value :: h
       integer(c_int), intent(out) :: restarted
       integer(c_int64_t), intent(out) :: epoch
       integer(c_int) :: rc
     end function c_psls_restarted

     function c_psls_stats(h, out) bind(C, name="psls_stats") result(rc)
       import :: c_int, c_ptr, psls_stats_t
       type(c_ptr), value :: h
       type(psls_stats_t), intent(out) :: out
       integer(c_int) :: rc
     end function c_psls_stats

     function c_psls_strerror(code) bind(C, name="psls_strerror") result(msg)
       import :: c_int, c_ptr
       integer(c_int), value :: code
       type(c_ptr) :: msg
     end function c_psls_strerror

     function c_psls_last_error(buf, len) bind(C, name="psls_last_error") result(rc)
       import :: c_int, c_char, c_size_t
       character(kind=c_char), intent(out) :: buf(*)
       integer(c_size_t), value :: len
       integer(c_int) :: rc
     end function c_psls_last_error

     function c_strlen(s) bind(C, name="strlen") result(n)
       import :: c_ptr, c_size_t
       type(c_ptr), value :: s
       integer(c_size_t) :: n
     end function c_strlen
  end interface

  ! ---------------------------------------------------------------------------------------
  ! Generic names: counts and sizes of either integer kind, and typed arrays.
  ! ---------------------------------------------------------------------------------------
  interface psls_local_range
     module procedure local_range_i4, local_range_i8
  end interface psls_local_range

  interface psls_alloc
     module procedure alloc_ptr_i4, alloc_ptr_i8
  end interface psls_alloc

  interface psls_alloc_real8
     module procedure alloc_real8_i4, alloc_real8_i8
  end interface psls_alloc_real8

  interface psls_alloc_real8_2d
     module procedure alloc_real8_2d_i4, alloc_real8_2d_i8
  end interface psls_alloc_real8_2d

  interface psls_alloc_int8
     module procedure alloc_int8_i4, alloc_int8_i8
  end interface psls_alloc_int8

  ! psls_free(h, x, ierr): x is a c_ptr from psls_alloc or an array pointer from
  ! psls_alloc_real8 / _real8_2d / _int8 (then nullified).
  interface psls_free
     module procedure psls_free_ptr, psls_free_real8, psls_free_real8_2d, psls_free_int8
  end interface psls_free

  interface psls_file_create
     module procedure file_create_i4, file_create_i8
  end interface psls_file_create

  interface psls_file_grow
     module procedure file_grow_i4, file_grow_i8
  end interface psls_file_grow

  ! psls_protect(h, name, ptr, nbytes, ierr) for raw memory, or psls_protect(h, name, x, ierr)
  ! for a scalar or a contiguous 1-D array of integer(4), integer(8) or real(8) that has the
  ! TARGET (or SAVE) attribute and lives until psls_finalize.
  interface psls_protect
     module procedure protect_ptr_i4, protect_ptr_i8
     module procedure protect_i4_scalar, protect_i4_array
     module procedure protect_i8_scalar, protect_i8_array
     module procedure protect_real8_scalar, protect_real8_array
  end interface psls_protect

  ! The detail of a failure detected in this module (before any C call), for psls_last_error.
  character(len=512) :: module_error = ''

contains

  ! ---------------------------------------------------------------------------------------
  ! Error handling
  ! ---------------------------------------------------------------------------------------

  ! Hands a C function's return code to the caller (see report). A failed C call replaces
  ! any earlier failure of this module as "the last error".
  subroutine done(rc, what, ierr)
    integer(c_int), intent(in) :: rc
    character(*), intent(in) :: what
    integer, intent(out), optional :: ierr
    if (rc /= PSLS_OK) module_error = ''
    call report(int(rc), what, ierr)
  end subroutine done

  ! Hands an error code to the caller through ierr, or, without ierr, stops on an error.
  subroutine report(code, what, ierr)
    integer, intent(in) :: code
    character(*), intent(in) :: what
    integer, intent(out), optional :: ierr
    if (present(ierr)) then
      ierr = code
    else if (code /= PSLS_OK) then
      call fail(what, code)
    end if
  end subroutine report

  ! An invalid argument found here, before any C call: recorded for psls_last_error.
  subroutine arg_error(what, detail, ierr)
    character(*), intent(in) :: what, detail
    integer, intent(out), optional :: ierr
    module_error = what // ': ' // detail
    if (present(ierr)) then
      ierr = PSLS_ERR_ARG
    else
      call fail(what, PSLS_ERR_ARG)
    end if
  end subroutine arg_error

  subroutine fail(what, code)
    character(*), intent(in) :: what
    integer, intent(in) :: code
    write (error_unit, '(a)') 'psls: ' // what // ' failed: ' // psls_error_message(code)
    error stop 1
  end subroutine fail

  ! psls_strerror(code, msg): the static meaning of an error code.
  subroutine psls_strerror(code, msg)
    integer, intent(in) :: code
    character(*), intent(out) :: msg
    msg = c_string(c_psls_strerror(int(code, c_int)))
  end subroutine psls_strerror

  ! psls_last_error(msg, ierr): the detailed message of this thread's last failed call.
  subroutine psls_last_error(msg, ierr)
    character(*), intent(out) :: msg
    integer, intent(out), optional :: ierr
    character(kind=c_char) :: buf(1024)
    integer(c_int) :: rc
    if (len_trim(module_error) > 0) then
      msg = module_error
      if (present(ierr)) ierr = PSLS_OK
      return
    end if
    rc = c_psls_last_error(buf, int(size(buf), c_size_t))
    msg = from_c(buf)
    if (present(ierr)) ierr = int(rc)
  end subroutine psls_last_error

  ! psls_error_message(code): "meaning of code: detail of the last failure", for messages.
  function psls_error_message(code) result(s)
    integer, intent(in) :: code
    character(:), allocatable :: s
    character(len=1024) :: detail
    integer :: e
    s = c_string(c_psls_strerror(int(code, c_int)))
    if (code == PSLS_OK) return
    call psls_last_error(detail, e)
    if (e == PSLS_OK .and. len_trim(detail) > 0) s = s // ': ' // trim(detail)
  end function psls_error_message

  ! ---------------------------------------------------------------------------------------
  ! Strings
  ! ---------------------------------------------------------------------------------------

  ! A trimmed, NUL-terminated copy of a Fortran string.
  ! Whether the name `s` holds a NUL character, which C would take for its end: then the
  ! call `what` fails with PSLS_ERR_ARG (through ierr, or it stops).
  logical function has_nul(what, s, ierr)
    character(*), intent(in) :: what, s
    integer, intent(out), optional :: ierr
    has_nul = index(s, c_null_char) > 0
    if (has_nul) then
      call arg_error(what, 'the name contains a NUL character (char(0)), which would end ' // &
           'it early in C: names are plain text', ierr)
    end if
  end function has_nul

  pure function to_c(s) result(c)
    character(*), intent(in) :: s
    character(kind=c_char, len=len_trim(s) + 1) :: c
    c = trim(s) // c_null_char
  end function to_c

  ! The characters of a NUL-terminated buffer, up to the NUL.
  pure function from_c(buf) result(s)
    character(kind=c_char), intent(in) :: buf(:)
    character(:), allocatable :: s
    integer :: i, n
    n = size(buf)
    do i = 1, size(buf)
      if (buf(i) == c_null_char) then
        n = i - 1
        exit
      end if
    end do
    allocate (character(len=n) :: s)
    do i = 1, n
      s(i:i) = buf(i)
    end do
  end function from_c

  ! A copy of a C string (empty for NULL).
  function c_string(p) result(s)
    type(c_ptr), intent(in) :: p
    character(:), allocatable :: s
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    if (.not. c_associated(p)) then
      s = ''
      return
    end if
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate (character(len=n) :: s)
    do i = 1, n
      s(i:i) = chars(i)
    end do
  end function c_string

  ! ---------------------------------------------------------------------------------------
  ! Init, finalize, queries
  ! ---------------------------------------------------------------------------------------

  ! psls_init(comm, h, ierr): collective over comm (a Fortran MPI communicator, e.g.
  ! MPI_COMM_WORLD). MPI must be initialized with MPI_THREAD_MULTIPLE.
  subroutine psls_init(comm, h, ierr)
    integer, intent(in) :: comm
    type(c_ptr), intent(out) :: h
    integer, intent(out), optional :: ierr
    h = c_null_ptr
    call done(c_psls_init_f(int(comm, c_int), h), 'psls_init', ierr)
  end subroutine psls_init

  ! psls_finalize(h, ierr): collective; closes what is left and sets h to c_null_ptr. It does
  ! not call MPI_Finalize.
  subroutine psls_finalize(h, ierr)
    type(c_ptr), intent(inout) :: h
    integer, intent(out), optional :: ierr
    call done(c_psls_finalize(h), 'psls_finalize', ierr)
  end subroutine psls_finalize

  subroutine psls_rank(h, rank, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out) :: rank
    integer, intent(out), optional :: ierr
    integer(c_int) :: r
    r = -1
    call done(c_psls_rank(h, r), 'psls_rank', ierr)
    rank = int(r)
  end subroutine psls_rank

  subroutine psls_size(h, size, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out) :: size
    integer, intent(out), optional :: ierr
    integer(c_int) :: s
    s = 0
    call done(c_psls_size(h, s), 'psls_size', ierr)
    size = int(s)
  end subroutine psls_size

  ! psls_node(h, node, ierr): this rank's node index (0-based).
  subroutine psls_node(h, node, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out) :: node
    integer, intent(out), optional :: ierr
    integer(c_int) :: n
    n = -1
    call done(c_psls_node(h, n), 'psls_node', ierr)
    node = int(n)
  end subroutine psls_node

  subroutine psls_num_nodes(h, n, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out) :: n
    integer, intent(out), optional :: ierr
    integer(c_int) :: k
    k = 0
    call done(c_psls_num_nodes(h, k), 'psls_num_nodes', ierr)
    n = int(k)
  end subroutine psls_num_nodes

  ! psls_node_name(h, node, name, ierr): the name of node `node` (0-based), blank-padded;
  ! PSLS_ERR_ARG if it does not fit in `name`.
  subroutine psls_node_name(h, node, name, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: node
    character(*), intent(out) :: name
    integer, intent(out), optional :: ierr
    character(kind=c_char) :: buf(len(name) + 1)
    integer(c_int) :: rc
    buf = c_null_char
    rc = c_psls_node_name(h, int(node, c_int), buf, int(size(buf), c_size_t))
    name = ''
    if (rc == PSLS_OK) name = from_c(buf)
    call done(rc, 'psls_node_name', ierr)
  end subroutine psls_node_name

  ! psls_buddy(h, node, buddy, ierr): the node index of node `node`'s buddy.
  subroutine psls_buddy(h, node, buddy, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: node
    integer, intent(out) :: buddy
    integer, intent(out), optional :: ierr
    integer(c_int) :: b
    b = -1
    call done(c_psls_buddy(h, int(node, c_int), b), 'psls_buddy', ierr)
    buddy = int(b)
  end subroutine psls_buddy

  ! psls_local_range(h, n, first, last, ierr): this rank's block of 1..n, as the 1-based
  ! inclusive range first..last (empty when first > last). The blocks are those of the Rust
  ! and C APIs: the same items on the same ranks.
  subroutine local_range_i8(h, n, first, last, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), intent(in) :: n
    integer(c_int64_t), intent(out) :: first, last
    integer, intent(out), optional :: ierr
    integer(c_int64_t) :: b, e
    integer(c_int) :: rc
    first = 1
    last = 0
    if (n < 0) then
      call arg_error('psls_local_range', 'negative item count', ierr)
      return
    end if
    b = 0
    e = 0
    rc = c_psls_local_range(h, n, b, e)
    if (rc == PSLS_OK) then
      first = b + 1
      last = e
    end if
    call done(rc, 'psls_local_range', ierr)
  end subroutine local_range_i8

  subroutine local_range_i4(h, n, first, last, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: n
    integer, intent(out) :: first, last
    integer, intent(out), optional :: ierr
    integer(c_int64_t) :: f8, l8
    call local_range_i8(h, int(n, c_int64_t), f8, l8, ierr)
    first = int(f8)
    last = int(l8)
  end subroutine local_range_i4

  ! ---------------------------------------------------------------------------------------
  ! Global arrays
  ! ---------------------------------------------------------------------------------------

  ! psls_alloc(h, bytes, ptr, ierr): collective; `bytes` zeroed bytes (or, after a restart,
  ! the checkpointed contents), at the same address on every rank.
  subroutine alloc_ptr_i8(h, bytes, ptr, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), intent(in) :: bytes
    type(c_ptr), intent(out) :: ptr
    integer, intent(out), optional :: ierr
    ptr = c_null_ptr
    if (bytes < 0) then
      call arg_error('psls_alloc', 'negative byte count', ierr)
      return
    end if
    call done(c_psls_alloc(h, bytes, ptr), 'psls_alloc', ierr)
  end subroutine alloc_ptr_i8

  subroutine alloc_ptr_i4(h, bytes, ptr, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: bytes
    type(c_ptr), intent(out) :: ptr
    integer, intent(out), optional :: ierr
    call alloc_ptr_i8(h, int(bytes, c_int64_t), ptr, ierr)
  end subroutine alloc_ptr_i4

  ! n elements of `elem` bytes: the byte count, or an error for a negative or overflowing n.
  subroutine elem_bytes(n, elem, what, bytes, ierr)
    integer(c_int64_t), intent(in) :: n
    integer, intent(in) :: elem
    character(*), intent(in) :: what
    integer(c_int64_t), intent(out) :: bytes
    integer, intent(out), optional :: ierr
    bytes = -1
    if (n < 0) then
      call arg_error(what, 'negative element count', ierr)
    else if (n > huge(n) / elem) then
      call arg_error(what, 'element count too large', ierr)
    else
      bytes = n * elem
      if (present(ierr)) ierr = PSLS_OK
    end if
  end subroutine elem_bytes

  ! psls_alloc_real8(h, n, a, ierr): a global array of n real(8), as a(1:n).
  subroutine alloc_real8_i8(h, n, a, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), intent(in) :: n
    real(c_double), pointer, intent(out) :: a(:)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer(c_int64_t) :: bytes
    integer :: e
    nullify (a)
    p = c_null_ptr
    call elem_bytes(n, 8, 'psls_alloc_real8', bytes, e)
    if (e == PSLS_OK) call alloc_ptr_i8(h, bytes, p, e)
    if (e == PSLS_OK) call c_f_pointer(p, a, [n])
    call report(e, 'psls_alloc_real8', ierr)
  end subroutine alloc_real8_i8

  subroutine alloc_real8_i4(h, n, a, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: n
    real(c_double), pointer, intent(out) :: a(:)
    integer, intent(out), optional :: ierr
    call alloc_real8_i8(h, int(n, c_int64_t), a, ierr)
  end subroutine alloc_real8_i4

  ! psls_alloc_real8_2d(h, n1, n2, a, ierr): a global n1 x n2 array of real(8), as
  ! a(1:n1, 1:n2), column-major (a(:, j) contiguous).
  subroutine alloc_real8_2d_i8(h, n1, n2, a, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), intent(in) :: n1, n2
    real(c_double), pointer, intent(out) :: a(:, :)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer(c_int64_t) :: bytes
    integer :: e
    nullify (a)
    if (n1 < 0 .or. n2 < 0) then
      call arg_error('psls_alloc_real8_2d', 'negative extent', ierr)
      return
    end if
    if (n1 > 0) then
      if (n2 > huge(n2) / n1 / 8) then
        call arg_error('psls_alloc_real8_2d', 'array too large', ierr)
        return
      end if
    end if
    bytes = n1 * n2 * 8
    p = c_null_ptr
    call alloc_ptr_i8(h, bytes, p, e)
    if (e == PSLS_OK) call c_f_pointer(p, a, [n1, n2])
    call report(e, 'psls_alloc_real8_2d', ierr)
  end subroutine alloc_real8_2d_i8

  subroutine alloc_real8_2d_i4(h, n1, n2, a, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: n1, n2
    real(c_double), pointer, intent(out) :: a(:, :)
    integer, intent(out), optional :: ierr
    call alloc_real8_2d_i8(h, int(n1, c_int64_t), int(n2, c_int64_t), a, ierr)
  end subroutine alloc_real8_2d_i4

  ! psls_alloc_int8(h, n, a, ierr): a global array of n integer(8), as a(1:n).
  subroutine alloc_int8_i8(h, n, a, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), intent(in) :: n
    integer(c_int64_t), pointer, intent(out) :: a(:)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer(c_int64_t) :: bytes
    integer :: e
    nullify (a)
    p = c_null_ptr
    call elem_bytes(n, 8, 'psls_alloc_int8', bytes, e)
    if (e == PSLS_OK) call alloc_ptr_i8(h, bytes, p, e)
    if (e == PSLS_OK) call c_f_pointer(p, a, [n])
    call report(e, 'psls_alloc_int8', ierr)
  end subroutine alloc_int8_i8

  subroutine alloc_int8_i4(h, n, a, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: n
    integer(c_int64_t), pointer, intent(out) :: a(:)
    integer, intent(out), optional :: ierr
    call alloc_int8_i8(h, int(n, c_int64_t), a, ierr)
  end subroutine alloc_int8_i4

  ! psls_free_ptr(h, ptr, ierr): collective; ptr must come from psls_alloc.
  subroutine psls_free_ptr(h, ptr, ierr)
    type(c_ptr), intent(in) :: h
    type(c_ptr), intent(in) :: ptr
    integer, intent(out), optional :: ierr
    call done(c_psls_free(h, ptr), 'psls_free', ierr)
  end subroutine psls_free_ptr

  subroutine psls_free_real8(h, a, ierr)
    type(c_ptr), intent(in) :: h
    real(c_double), pointer, intent(inout) :: a(:)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer :: e
    p = c_null_ptr
    if (associated(a)) then
      if (size(a) == 0) then
        call arg_error('psls_free_real8', 'an empty array: free it with psls_free_ptr and the c_ptr ' // &
             'psls_alloc returned', ierr)
        return
      end if
      p = c_loc(a(lbound(a, 1)))
    end if
    call psls_free_ptr(h, p, e)
    if (e == PSLS_OK) nullify (a)
    call report(e, 'psls_free_real8', ierr)
  end subroutine psls_free_real8

  subroutine psls_free_real8_2d(h, a, ierr)
    type(c_ptr), intent(in) :: h
    real(c_double), pointer, intent(inout) :: a(:, :)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer :: e
    p = c_null_ptr
    if (associated(a)) then
      if (size(a) == 0) then
        call arg_error('psls_free_real8_2d', 'an empty array: free it with psls_free_ptr and the c_ptr ' // &
             'psls_alloc returned', ierr)
        return
      end if
      p = c_loc(a(lbound(a, 1), lbound(a, 2)))
    end if
    call psls_free_ptr(h, p, e)
    if (e == PSLS_OK) nullify (a)
    call report(e, 'psls_free_real8_2d', ierr)
  end subroutine psls_free_real8_2d

  subroutine psls_free_int8(h, a, ierr)
    type(c_ptr), intent(in) :: h
    integer(c_int64_t), pointer, intent(inout) :: a(:)
    integer, intent(out), optional :: ierr
    type(c_ptr) :: p
    integer :: e
    p = c_null_ptr
    if (associated(a)) then
      if (size(a) == 0) then
        call arg_error('psls_free_int8', 'an empty array: free it with psls_free_ptr and the c_ptr ' // &
             'psls_alloc returned', ierr)
        return
      end if
      p = c_loc(a(lbound(a, 1)))
    end if
    call psls_free_ptr(h, p, e)
    if (e == PSLS_OK) nullify (a)
    call report(e, 'psls_free_int8', ierr)
  end subroutine psls_free_int8

  ! ---------------------------------------------------------------------------------------
  ! Mapped PFS files
  ! ---------------------------------------------------------------------------------------

  ! psls_file_create(h, name, size, f, ptr, ierr): collective; creates the PFS file `name`
  ! (size bytes of zeros) and maps it: ptr is its first byte in the global space.
  subroutine file_create_i8(h, name, size, f, ptr, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer(c_int64_t), intent(in) :: size
    type(c_ptr), intent(out) :: f, ptr
    integer, intent(out), optional :: ierr
    f = c_null_ptr
    ptr = c_null_ptr
    if (size < 0) then
      call arg_error('psls_file_create', 'negative size', ierr)
      return
    end if
    if (has_nul('psls_file_create', name, ierr)) return
    call done(c_psls_file_create(h, to_c(name), size, f, ptr), 'psls_file_create("' // &
         trim(name) // '")', ierr)
  end subroutine file_create_i8

  subroutine file_create_i4(h, name, size, f, ptr, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer, intent(in) :: size
    type(c_ptr), intent(out) :: f, ptr
    integer, intent(out), optional :: ierr
    call file_create_i8(h, name, int(size, c_int64_t), f, ptr, ierr)
  end subroutine file_create_i4

  ! psls_file_open(h, name, f, ptr, size, ierr): collective; maps the existing PFS file `name`
  ! (PSLS_ERR_NOT_FOUND if there is none); size receives its size in bytes.
  subroutine psls_file_open(h, name, f, ptr, size, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    type(c_ptr), intent(out) :: f, ptr
    integer(c_int64_t), intent(out) :: size
    integer, intent(out), optional :: ierr
    f = c_null_ptr
    ptr = c_null_ptr
    size = 0
    if (has_nul('psls_file_open', name, ierr)) return
    call done(c_psls_file_open(h, to_c(name), f, ptr, size), 'psls_file_open("' // &
         trim(name) // '")', ierr)
  end subroutine psls_file_open

  ! psls_file_grow(f, new_size, ptr, ierr): collective; ptr receives the (possibly moved)
  ! address of the file's first byte.
  subroutine file_grow_i8(f, new_size, ptr, ierr)
    type(c_ptr), intent(in) :: f
    integer(c_int64_t), intent(in) :: new_size
    type(c_ptr), intent(out) :: ptr
    integer, intent(out), optional :: ierr
    ptr = c_null_ptr
    if (new_size < 0) then
      call arg_error('psls_file_grow', 'negative size', ierr)
      return
    end if
    call done(c_psls_file_grow(f, new_size, ptr), 'psls_file_grow', ierr)
  end subroutine file_grow_i8

  subroutine file_grow_i4(f, new_size, ptr, ierr)
    type(c_ptr), intent(in) :: f
    integer, intent(in) :: new_size
    type(c_ptr), intent(out) :: ptr
    integer, intent(out), optional :: ierr
    call file_grow_i8(f, int(new_size, c_int64_t), ptr, ierr)
  end subroutine file_grow_i4

  subroutine psls_file_size(f, size, ierr)
    type(c_ptr), intent(in) :: f
    integer(c_int64_t), intent(out) :: size
    integer, intent(out), optional :: ierr
    size = 0
    call done(c_psls_file_size(f, size), 'psls_file_size', ierr)
  end subroutine psls_file_size

  ! psls_file_flush(f, ierr): collective; publishes every mapped file to disk, atomically.
  ! Refused (PSLS_ERR_CHECKPOINT) once the job checkpoints: the permanent checkpoint
  ! (psls_checkpoint_now(h, PSLS_CKPT_PERMANENT)) publishes the files then.
  subroutine psls_file_flush(f, ierr)
    type(c_ptr), intent(in) :: f
    integer, intent(out), optional :: ierr
    call done(c_psls_file_flush(f), 'psls_file_flush', ierr)
  end subroutine psls_file_flush

  ! psls_file_close(f, ierr): collective; flushes (unless the job checkpoints), unmaps, and
  ! sets f to c_null_ptr. Pointers into the file are invalid afterwards.
  subroutine psls_file_close(f, ierr)
    type(c_ptr), intent(inout) :: f
    integer, intent(out), optional :: ierr
    call done(c_psls_file_close(f), 'psls_file_close', ierr)
  end subroutine psls_file_close

  ! ---------------------------------------------------------------------------------------
  ! Synchronization
  ! ---------------------------------------------------------------------------------------

  subroutine psls_barrier(h, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out), optional :: ierr
    call done(c_psls_barrier(h), 'psls_barrier', ierr)
  end subroutine psls_barrier

  ! psls_mutex_create(h, id, ierr): collective; a global lock, numbered 0, 1, 2, ...
  subroutine psls_mutex_create(h, id, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out) :: id
    integer, intent(out), optional :: ierr
    integer(c_int) :: i
    i = -1
    call done(c_psls_mutex_create(h, i), 'psls_mutex_create', ierr)
    id = int(i)
  end subroutine psls_mutex_create

  subroutine psls_mutex_lock(h, id, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: id
    integer, intent(out), optional :: ierr
    call done(c_psls_mutex_lock(h, int(id, c_int)), 'psls_mutex_lock', ierr)
  end subroutine psls_mutex_lock

  subroutine psls_mutex_unlock(h, id, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: id
    integer, intent(out), optional :: ierr
    call done(c_psls_mutex_unlock(h, int(id, c_int)), 'psls_mutex_unlock', ierr)
  end subroutine psls_mutex_unlock

  ! ---------------------------------------------------------------------------------------
  ! Private state and checkpoints
  ! ---------------------------------------------------------------------------------------

  ! psls_protect(h, name, ptr, nbytes, ierr): nbytes of this rank's memory at ptr are saved
  ! at every checkpoint; after a restart they are overwritten with the saved bytes during this
  ! call. The memory must stay valid until psls_finalize.
  subroutine protect_ptr_i8(h, name, ptr, nbytes, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    type(c_ptr), intent(in) :: ptr
    integer(c_int64_t), intent(in) :: nbytes
    integer, intent(out), optional :: ierr
    if (nbytes < 0) then
      call arg_error('psls_protect("' // trim(name) // '")', 'negative byte count', ierr)
      return
    end if
    if (has_nul('psls_protect', name, ierr)) return
    call done(c_psls_protect(h, to_c(name), ptr, nbytes), 'psls_protect("' // trim(name) &
         // '")', ierr)
  end subroutine protect_ptr_i8

  subroutine protect_ptr_i4(h, name, ptr, nbytes, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    type(c_ptr), intent(in) :: ptr
    integer, intent(in) :: nbytes
    integer, intent(out), optional :: ierr
    call protect_ptr_i8(h, name, ptr, int(nbytes, c_int64_t), ierr)
  end subroutine protect_ptr_i4

  ! Protects n elements of `elem` bytes from `first` to `last` (the addresses of the first
  ! and last elements): refused unless they are contiguous.
  subroutine protect_span(h, name, first, last, n, elem, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    type(c_ptr), intent(in) :: first, last
    integer, intent(in) :: n, elem
    integer, intent(out), optional :: ierr
    integer(c_intptr_t) :: a, b
    if (n == 0) then
      call arg_error('psls_protect("' // trim(name) // '")', 'empty array', ierr)
      return
    end if
    a = transfer(first, a)
    b = transfer(last, b)
    if (b - a /= int(n - 1, c_intptr_t) * elem) then
      call arg_error('psls_protect("' // trim(name) // '")', &
           'the array is not contiguous: protect a whole array or a contiguous section', ierr)
      return
    end if
    call protect_ptr_i8(h, name, first, int(n, c_int64_t) * elem, ierr)
  end subroutine protect_span

  subroutine protect_i4_scalar(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer(c_int), target, intent(inout) :: x
    integer, intent(out), optional :: ierr
    call protect_ptr_i8(h, name, c_loc(x), 4_c_int64_t, ierr)
  end subroutine protect_i4_scalar

  subroutine protect_i4_array(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer(c_int), target, intent(inout) :: x(:)
    integer, intent(out), optional :: ierr
    if (size(x) == 0) then
      call protect_span(h, name, c_null_ptr, c_null_ptr, 0, 4, ierr)
      return
    end if
    call protect_span(h, name, c_loc(x(1)), c_loc(x(size(x))), size(x), 4, ierr)
  end subroutine protect_i4_array

  subroutine protect_i8_scalar(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer(c_int64_t), target, intent(inout) :: x
    integer, intent(out), optional :: ierr
    call protect_ptr_i8(h, name, c_loc(x), 8_c_int64_t, ierr)
  end subroutine protect_i8_scalar

  subroutine protect_i8_array(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    integer(c_int64_t), target, intent(inout) :: x(:)
    integer, intent(out), optional :: ierr
    if (size(x) == 0) then
      call protect_span(h, name, c_null_ptr, c_null_ptr, 0, 8, ierr)
      return
    end if
    call protect_span(h, name, c_loc(x(1)), c_loc(x(size(x))), size(x), 8, ierr)
  end subroutine protect_i8_array

  subroutine protect_real8_scalar(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    real(c_double), target, intent(inout) :: x
    integer, intent(out), optional :: ierr
    call protect_ptr_i8(h, name, c_loc(x), 8_c_int64_t, ierr)
  end subroutine protect_real8_scalar

  subroutine protect_real8_array(h, name, x, ierr)
    type(c_ptr), intent(in) :: h
    character(*), intent(in) :: name
    real(c_double), target, intent(inout) :: x(:)
    integer, intent(out), optional :: ierr
    if (size(x) == 0) then
      call protect_span(h, name, c_null_ptr, c_null_ptr, 0, 8, ierr)
      return
    end if
    call protect_span(h, name, c_loc(x(1)), c_loc(x(size(x))), size(x), 8, ierr)
  end subroutine protect_real8_array

  ! psls_checkpoint(h, ierr): collective; a memory checkpoint, or a permanent one every
  ! PSLS_CKPT_PERMANENT_EVERY-th call (see docs/checkpoint.md).
  subroutine psls_checkpoint(h, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(out), optional :: ierr
    call done(c_psls_checkpoint(h), 'psls_checkpoint', ierr)
  end subroutine psls_checkpoint

  ! psls_checkpoint_now(h, kind, ierr): collective; PSLS_CKPT_MEMORY or PSLS_CKPT_PERMANENT.
  subroutine psls_checkpoint_now(h, kind, ierr)
    type(c_ptr), intent(in) :: h
    integer, intent(in) :: kind
    integer, intent(out), optional :: ierr
    call done(c_psls_checkpoint_now(h, int(kind, c_int)), 'psls_checkpoint_now', ierr)
  end subroutine psls_checkpoint_now

  ! psls_restarted(h, restarted, epoch, ierr): whether this run restarted, and from which
  ! checkpoint epoch (0 if not).
  subroutine psls_restarted(h, restarted, epoch, ierr)
    type(c_ptr), intent(in) :: h
    logical, intent(out) :: restarted
    integer(c_int64_t), intent(out) :: epoch
    integer, intent(out), optional :: ierr
    integer(c_int) :: r
    r = 0
    epoch = 0
    call done(c_psls_restarted(h, r, epoch), 'psls_restarted', ierr)
    restarted = r /= 0
  end subroutine psls_restarted

  subroutine psls_stats(h, stats, ierr)
    type(c_ptr), intent(in) :: h
    type(psls_stats_t), intent(out) :: stats
    integer, intent(out), optional :: ierr
    call done(c_psls_stats(h, stats), 'psls_stats', ierr)
  end subroutine psls_stats

end module psls
