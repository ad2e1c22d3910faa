! mgs: Modified Gram-Schmidt on a global matrix, with checkpoints; the Fortran twin of
! examples/src/mgs.rs, and bit for bit the same computation: for the same size it prints the
! same checksum as the Rust program, crashed and restarted or not.
!
! The matrix A (--rows M x --vectors N, vector j contiguous: A(:, j)) lives in one global
! array, and the vectors are distributed over the ranks in blocks (psls_local_range). Step j:
! the owner of vector j normalizes it (q_j); after a barrier, every rank orthogonalizes its own
! vectors k > j against q_j. A becomes Q in place. Every --every vectors, at the head of the
! loop, the program calls psls_checkpoint; the loop index is protected private state, so a
! restarted run goes on from the last checkpoint. At the end rank 0 checks that Q is
! orthonormal and prints a checksum (FNV-1a 64 over the bit patterns of Q, column by column).
!
! Build (see docs/fortran.md):
!   bindings/fortran/build.sh build/fortran
!   mpif90 -O2 -ffp-contract=off -I build/fortran examples/fortran/util.f90 \
!     examples/fortran/mgs.f90 -o mgs_f90 \
!     -L build/fortran -lpslsf -L target/release -lpsls -lhwloc -ludev -lm -ldl -lpthread -lrt
! Run:
!   psls-launch -n 4 --virtual-nodes 4 -- ./mgs_f90 --rows 4096 --vectors 64 --every 4
!
! The checksum matches the Rust one only if both compute with plain IEEE double arithmetic,
! in the same order: no -ffast-math, and no fused multiply-add contraction (-ffp-contract=off;
! it matters with -march=native and other FMA-capable targets).

program mgs_f90
  use, intrinsic :: iso_fortran_env, only: int64, real64, output_unit, error_unit
  use mpi
  use psls
  use example_util
  implicit none

  integer(int64), parameter :: K1 = ior(shiftl(int(z'9E3779B9', int64), 32), &
       int(z'7F4A7C15', int64))
  integer(int64), parameter :: K2 = ior(shiftl(int(z'C2B2AE3D', int64), 32), &
       int(z'27D4EB4F', int64))
  integer(int64), parameter :: K3 = ior(shiftl(int(z'BF58476D', int64), 32), &
       int(z'1CE4E5B9', int64))

  character(len=*), parameter :: usage = &
       'usage: mgs_f90 [--rows M] [--vectors N] [--every F] [--crash-at J --crash-rank R]' // &
       new_line('a') // new_line('a') // &
       'Modified Gram-Schmidt of an M x N matrix (default 4096 x 64) in PSLS global memory,' // &
       ' with a' // new_line('a') // &
       'memory checkpoint every F vectors (default 4; 0: none). Prints a checksum of Q that' // &
       ' is the same' // new_line('a') // &
       'from run to run (and as the Rust mgs), and fails if Q is not orthonormal.' // &
       new_line('a') // new_line('a') // &
       '  --crash-at J --crash-rank R   (testing) rank R aborts at the head of step J,' // &
       ' unless this run' // new_line('a') // &
       '                                is a restart'

  integer :: ierr, provided, rank, nargs, argi, e
  integer(int64) :: m, n, every, crash_at, crash_rank, first, last, j, k, i
  integer(int64) :: checkpoints, epoch, hash
  ! Private state: saved at every checkpoint, restored by psls_protect after a restart.
  integer(int64), target :: next, dims(2)
  logical :: restarted, ok, help
  type(c_ptr) :: h
  real(c_double), pointer :: a(:, :)
  real(real64), allocatable :: q(:)
  real(real64) :: s, norm, r, d, want, worst, t0, elapsed
  character(len=256) :: arg, msg

  call MPI_Init_thread(MPI_THREAD_MULTIPLE, provided, ierr)
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)

  ! Options.
  m = 4096
  n = 64
  every = 4
  crash_at = -1
  crash_rank = -1
  help = .false.
  msg = ''
  nargs = command_argument_count()
  argi = 1
  do while (argi <= nargs .and. len_trim(msg) == 0)
    call get_command_argument(argi, arg)
    select case (trim(arg))
    case ('-h', '--help')
      help = .true.
      exit
    case ('--rows')
      call parse_count('--rows', argi, m, msg)
    case ('--vectors')
      call parse_count('--vectors', argi, n, msg)
    case ('--every')
      call parse_count('--every', argi, every, msg)
    case ('--crash-at')
      call parse_count('--crash-at', argi, crash_at, msg)
    case ('--crash-rank')
      call parse_count('--crash-rank', argi, crash_rank, msg)
    case default
      msg = 'unknown option "' // trim(arg) // '"'
    end select
    argi = argi + 1
  end do
  if (help) then
    if (rank == 0) write (output_unit, '(a)') usage
    call MPI_Finalize(ierr)
    call quit(0)
  end if
  if (len_trim(msg) == 0 .and. (m == 0 .or. n == 0 .or. n > m)) then
    msg = 'need 1 <= vectors <= rows (got ' // itoa(n) // ' vectors of ' // itoa(m) // ' rows)'
  end if
  if (len_trim(msg) == 0 .and. ((crash_at < 0) .neqv. (crash_rank < 0))) then
    msg = '--crash-at and --crash-rank go together'
  end if
  if (len_trim(msg) > 0) then
    if (rank == 0) write (error_unit, '(a)') 'mgs: ' // trim(msg) // new_line('a') // &
         new_line('a') // usage
    call MPI_Finalize(ierr)
    call quit(2)
  end if

  call psls_init(MPI_COMM_WORLD, h, e)
  if (e /= PSLS_OK) then
    write (error_unit, '(a)') 'mgs: psls_init: ' // psls_error_message(e)
    call quit(2)
  end if

  ! Same calls in the same order in every run: the K-th allocation gets the K-th
  ! allocation's pages back after a restart.
  call psls_alloc_real8_2d(h, m, n, a, e)
  call check(e, 'psls_alloc_real8_2d')
  call psls_local_range(h, n, first, last, e)       ! my vectors: first..last (1-based)
  call check(e, 'psls_local_range')
  next = 0
  call psls_protect(h, 'next', next, e)
  call check(e, 'psls_protect next')
  dims = [m, n]
  call psls_protect(h, 'shape', dims, e)
  call check(e, 'psls_protect shape')
  call psls_restarted(h, restarted, epoch, e)
  call check(e, 'psls_restarted')
  if (restarted .and. (dims(1) /= m .or. dims(2) /= n)) then
    write (error_unit, '(a)') 'mgs: rank ' // itoa(int(rank, int64)) // ': this run restarts a ' &
         // itoa(dims(1)) // ' x ' // itoa(dims(2)) // ' run: give it --rows ' // &
         itoa(dims(1)) // ' --vectors ' // itoa(dims(2)) // &
         ', or set PSLS_CKPT_NAME to start a separate one'
    call quit(1)
  end if

  if (.not. restarted) then
    do j = first, last
      do i = 1, m
        a(i, j) = initial(i - 1, j - 1)
      end do
    end do
  else if (rank == 0) then
    write (output_unit, '(a)') 'mgs: restarted from checkpoint ' // itoa(epoch) // &
         ' at vector ' // itoa(next)
  end if
  call psls_barrier(h, e)
  call check(e, 'psls_barrier')

  t0 = MPI_Wtime()
  allocate (q(m))
  checkpoints = 0
  ! j is 0-based, as in mgs.rs; vector j is a(:, j + 1).
  do j = next, n - 1
    if (every > 0) then
      if (mod(j, every) == 0) then
        next = j
        call psls_checkpoint(h, e)
        call check(e, 'psls_checkpoint')
        checkpoints = checkpoints + 1
      end if
    end if
    if (j == crash_at .and. rank == crash_rank .and. .not. restarted) then
      write (error_unit, '(a)') 'mgs: rank ' // itoa(crash_rank) // ' crashing at vector ' // &
           itoa(j) // ' (--crash-at)'
      call crash()
    end if
    if (j + 1 >= first .and. j + 1 <= last) then
      q = a(:, j + 1)
      s = 0
      do i = 1, m
        s = s + q(i) * q(i)
      end do
      norm = sqrt(s)
      do i = 1, m
        q(i) = q(i) / norm
      end do
      a(:, j + 1) = q
    end if
    call psls_barrier(h, e)
    call check(e, 'psls_barrier')
    q = a(:, j + 1)
    do k = max(j + 2, first), last
      r = 0
      do i = 1, m
        r = r + q(i) * a(i, k)
      end do
      do i = 1, m
        a(i, k) = a(i, k) - r * q(i)
      end do
    end do
    call psls_barrier(h, e)
    call check(e, 'psls_barrier')
  end do
  elapsed = MPI_Wtime() - t0

  ok = .true.
  if (rank == 0) then
    worst = 0
    do j = 1, n
      do k = j, n
        d = 0
        do i = 1, m
          d = d + a(i, j) * a(i, k)
        end do
        want = 0
        if (j == k) want = 1
        worst = max(worst, abs(d - want))
      end do
    end do
    hash = fnv_init()
    do j = 1, n
      do i = 1, m
        hash = fnv_add(hash, a(i, j))
      end do
    end do
    ok = worst < 1.0e-9_real64
    write (output_unit, '(a)') 'mgs: ' // itoa(m) // ' x ' // itoa(n) // ', checkpoint every ' &
         // itoa(every) // ' vectors (' // itoa(checkpoints) // &
         ' taken in this run), orthogonality error ' // fmt_exp3(worst) // ' (' // &
         trim(merge('ok    ', 'FAILED', ok)) // '), checksum ' // hex16(hash)
    write (output_unit, '(a)') 'mgs: main loop ' // fmt_fixed(elapsed, 3) // ' s'
  end if
  call psls_barrier(h, e)
  call check(e, 'psls_barrier')
  call psls_free(h, a, e)
  call check(e, 'psls_free')
  call psls_finalize(h, e)
  if (e /= PSLS_OK) then
    write (error_unit, '(a)') 'mgs: psls_finalize: ' // psls_error_message(e)
    call quit(2)
  end if
  call MPI_Finalize(ierr)
  if (.not. ok) call quit(1)

contains

  ! Stops this rank with a message naming the failed call unless e is PSLS_OK.
  subroutine check(e, what)
    integer, intent(in) :: e
    character(*), intent(in) :: what
    if (e == PSLS_OK) return
    write (error_unit, '(a)') 'mgs: rank ' // itoa(int(rank, int64)) // ': ' // what // ': ' &
         // psls_error_message(e)
    call quit(1)
  end subroutine check

  ! The deterministic initial matrix of mgs.rs: element (i, j), both 0-based.
  pure function initial(i, j) result(v)
    integer(int64), intent(in) :: i, j
    real(real64) :: v, u, diag
    integer(int64) :: x
    x = ieor(mulwrap(i, K1), mulwrap(j, K2))
    x = ieor(x, shiftr(x, 31))
    x = mulwrap(x, K3)
    x = ieor(x, shiftr(x, 29))
    u = real(shiftr(x, 11), real64) / 2.0_real64**53
    diag = 0.0_real64
    if (i == j) diag = 4.0_real64
    v = (u - 0.5_real64) + diag
  end function initial

end program mgs_f90
