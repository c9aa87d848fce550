// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {FCMPCBase} from "./FCMPCBase.sol";

/// @title FC-MPC coordinator, commit-and-challenge mode
/// @notice The prosumers negotiate the FC-MPC iterations of an MPC step off chain (the same
/// iterations as FCMPCCoordinator runs on chain). One prosumer then posts, with a bond, one
/// commitment per step: the Merkle root of the step's leaves and the iteration at which it
/// stopped. Leaves, at positions p * P + i (P prosumers):
///  - iteration leaf (p, i), p = 0..lastP: keccak256(abi.encode(Leaf)) with the uploaded vector
///    u_i^{p,*} (the islanded plan at p = 0) and the committed iterate u_i^p as hashes of their
///    4 * nu packed bytes, theta_i^2, the iteration's max theta^2 and its stop decision;
///  - applied leaf, at (lastP + 1) * P + i: keccak256(abi.encode(t, i, keccak256(applied))) with
///    the applied first inputs of prosumer i (lane k = 0 of every block of u_i^lastP, n + 3 lanes);
/// padded with zero leaves to a power of two. During `period` seconds after posting, anyone
/// holding the data may prove one leaf wrong: the contract re-executes what FCMPCCoordinator
/// computes for that upload (`FCMPCBase`: the same bounds check, combination and theta^2), or
/// the iteration's stop rule, or the applied inputs, and slashes the bond. A challenge that
/// proves nothing forfeits the challenger's stake to the committer. A slashed step may be
/// committed again; a step whose window passed without a successful challenge is final.
/// Every iteration leaf carries its prosumer's signature of its message (EIP-712 `Message`,
/// bound to this contract and chain, the step, the iteration and the prosumer index), so a leaf
/// whose message its prosumer did not sign is provable fraud, and a prosumer cannot deny what it
/// sent.
contract FCMPCCommitCoordinator is FCMPCBase {
    /// @notice One iteration leaf (p, i) of a step's negotiation.
    /// @param eb battery energy uploaded at p = 0 (fixed point; 0 at p >= 1).
    /// @param eev EV energy uploaded at p = 0 (fixed point; 0 at p >= 1).
    /// @param theta2 theta_i^2 = ||u_i^p - u_i^{p-1}||^2 (0 at p = 0).
    /// @param maxTheta2 max_i theta_i^2 of the iteration.
    /// @param stop whether the step terminated with this iteration.
    /// @param uStarHash keccak256 of the uploaded vector u_i^{p,*} (u_i^0 at p = 0).
    /// @param iterateHash keccak256 of the committed iterate u_i^p.
    /// @param v, r, s prosumer i's ECDSA signature of its message (t, p, i, eb, eev, u_i^{p,*}) as
    /// the EIP-712 struct `Message` (see messageDigest); v = 0: the prosumer sent nothing, and its
    /// leaf holds the default (at p = 0 the zero plan with eb = eev = 0, at p >= 1 its previous
    /// committed iterate).
    struct Leaf {
        uint32 t;
        uint32 p;
        uint32 i;
        int32 eb;
        int32 eev;
        uint256 theta2;
        uint256 maxTheta2;
        bool stop;
        bytes32 uStarHash;
        bytes32 iterateHash;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice A step's commitment (two storage slots).
    struct Commitment {
        bytes32 root;
        address committer;
        uint40 postedAt;
        uint16 lastP;
        uint8 status; // 0 none, 1 pending, 2 final, 3 slashed
    }

    /// @notice What a successful challenge proved (0: nothing, the challenge failed).
    enum Fraud {
        None,
        Combination, // committed iterate != combine(u*, previous iterate)
        Bounds, // u* outside the prosumer's bounds (trades at p = 0)
        Theta, // theta_i^2 != ||u_i^p - u_i^{p-1}||^2
        Stop, // max theta^2 or stop decision of an iteration not the stop rule's
        Applied, // applied first inputs != lane k = 0 of the final committed iterate
        Malformed, // a committed vector without 4 * nu bytes (n + 3 lanes for applied inputs)
        Signature // a message its prosumer did not sign (or, unsigned, not the default of a silent prosumer)
    }

    uint8 internal constant PENDING = 1;
    uint8 internal constant FINAL = 2;
    uint8 internal constant SLASHED = 3;
    /// @notice Challenge kinds (events).
    uint8 internal constant UPDATE = 1;
    uint8 internal constant ITERATION = 2;
    uint8 internal constant APPLIED = 3;
    /// @notice EIP-712 type of a prosumer's message; `u` enters the struct hash as keccak256(u),
    /// the leaf's uStarHash.
    bytes32 public constant MESSAGE_TYPEHASH =
        keccak256("Message(uint32 t,uint32 p,uint32 i,int32 eb,int32 eev,bytes u)");
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant NAME_HASH = keccak256("FCMPCCommitCoordinator");
    bytes32 internal constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1 order / 2: signatures with a larger s (the malleable twin) are not accepted.
    uint256 internal constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    // ---------------------------------------------------------------- errors
    /// @notice A commitment for step t is not accepted now (next new step: nextStep).
    error WrongStep(uint32 t, uint32 nextStep);
    /// @notice msg.value is not the required bond or stake.
    error WrongBond(uint256 value, uint256 required);
    /// @notice lastP above pMax.
    error BadIteration(uint256 lastP, uint256 pMax);
    /// @notice The step's commitment is not open to challenges (status 0 none, 2 final, 3 slashed).
    error NotPending(uint32 t, uint8 status);
    /// @notice The challenge window of the step closed at `deadline`.
    error WindowClosed(uint256 deadline, uint256 timestamp);
    /// @notice A leaf is not at the claimed position of the committed tree.
    error BadProof(uint256 index);
    /// @notice Data supplied with a proof do not hash to what the leaf commits.
    error WitnessMismatch(bytes32 supplied, bytes32 committed);
    /// @notice No credit to withdraw, or the transfer failed.
    error WithdrawFailed(address to, uint256 amount);

    // ---------------------------------------------------------------- events
    event Committed(uint32 indexed t, address indexed committer, bytes32 root, uint16 lastP);
    event Finalized(uint32 indexed t, address indexed committer);
    /// @notice A challenge proved `fraud` at leaf (p, i) (i = 2^256 - 1: the whole iteration p).
    event Slashed(
        uint32 indexed t, address indexed committer, address indexed challenger, uint8 fraud, uint256 p, uint256 i
    );
    /// @notice A challenge of `kind` (1 update, 2 iteration, 3 applied) proved nothing.
    event ChallengeRejected(uint32 indexed t, address indexed challenger, uint8 kind, uint256 p, uint256 i);

    // ---------------------------------------------------------------- state
    /// @notice Bond posted with each commitment (wei); half goes to a successful challenger, half is burned.
    uint256 public immutable bond;
    /// @notice Stake of a challenger (wei), forfeited to the committer if the challenge proves nothing.
    uint256 public immutable challengeBond;

    /// @notice Next step without a commitment.
    uint32 public nextStep;
    mapping(uint256 => Commitment) public commitments;
    /// @notice Withdrawable balance of an account (released bonds, rewards, forfeited stakes).
    mapping(address => uint256) public credit;
    /// @notice Wei slashed and kept by no one.
    uint256 public burned;
    /// @notice keccak256 of the zero plan (4 * nu zero bytes), the vector of a prosumer silent at p = 0.
    bytes32 public immutable zeroHash;

    constructor(
        Config memory c,
        address[] memory agents_,
        uint16[] memory ids_,
        Bounds[] memory bounds_,
        uint256 bond_,
        uint256 challengeBond_
    ) FCMPCBase(c, agents_, ids_, bounds_) {
        if (bond_ < 2 || challengeBond_ == 0) revert InvalidConfig(9);
        bond = bond_;
        challengeBond = challengeBond_;
        zeroHash = keccak256(new bytes(((uint256(c.nAgents) + 3) * c.horizon) << 2));
    }

    // ---------------------------------------------------------------- commitments

    /// @notice Post the commitment of step t (a prosumer, with the bond): the root of its leaves
    /// and the iteration at which it stopped. Steps are committed in order; a slashed step may
    /// be committed again.
    function commit(uint32 t, bytes32 root, uint16 lastP) external payable {
        _agent();
        if (msg.value != bond) revert WrongBond(msg.value, bond);
        if (lastP > pMax) revert BadIteration(lastP, pMax);
        uint32 nx = nextStep;
        if (t == nx) {
            nextStep = nx + 1;
        } else if (t > nx || commitments[t].status != SLASHED) {
            revert WrongStep(t, nx);
        }
        commitments[t] = Commitment(root, msg.sender, uint40(block.timestamp), lastP, PENDING);
        emit Committed(t, msg.sender, root, lastP);
    }

    /// @notice Release the bonds of the steps [from, to) whose window has passed (anyone may
    /// call; steps already final or slashed are skipped; stops at the first step still open).
    /// @return last the first step not examined.
    function finalize(uint32 from, uint32 to) external returns (uint32 last) {
        address who;
        uint256 owed;
        uint256 b = bond;
        uint256 w = period;
        for (last = from; last < to; ++last) {
            Commitment storage c = commitments[last];
            uint8 s = c.status;
            if (s != PENDING) {
                if (s == 0) break;
                continue;
            }
            if (block.timestamp <= uint256(c.postedAt) + w) break;
            c.status = FINAL;
            address cm = c.committer;
            if (cm != who) {
                if (owed != 0) credit[who] += owed;
                who = cm;
                owed = 0;
            }
            owed += b;
            emit Finalized(last, cm);
        }
        if (owed != 0) credit[who] += owed;
    }

    /// @notice Send the caller's credit to it.
    function withdraw() external {
        uint256 a = credit[msg.sender];
        if (a == 0) revert WithdrawFailed(msg.sender, 0);
        credit[msg.sender] = 0;
        (bool ok,) = msg.sender.call{value: a}("");
        if (!ok) revert WithdrawFailed(msg.sender, a);
    }

    // ---------------------------------------------------------------- fraud proofs

    /// @notice Challenge iteration leaf (p, i): check prosumer i's signature of its message, then
    /// re-execute its upload as FCMPCCoordinator would (bounds of uStar, committed iterate,
    /// theta^2) from uStar and, at p >= 1, the committed iterate of its predecessor leaf
    /// (p - 1, i). An unsigned leaf (v = 0) must hold the default of a silent prosumer (p = 0: the
    /// zero plan and eb = eev = 0; p >= 1: uStar = the previous iterate). Send `challengeBond`.
    /// @param leaf the leaf, with its Merkle proof `proof`.
    /// @param prev the leaf (p - 1, i) with its proof `prevProof` (ignored at p = 0).
    /// @param uStar the vector that hashes to leaf.uStarHash.
    /// @param uPrev the vector that hashes to prev.iterateHash (ignored at p = 0).
    function challengeUpdate(
        uint32 t,
        Leaf calldata leaf,
        bytes32[] calldata proof,
        Leaf calldata prev,
        bytes32[] calldata prevProof,
        bytes calldata uStar,
        bytes calldata uPrev
    ) external payable {
        Commitment memory c = _pending(t);
        uint256 index = _leafAt(c, t, leaf, proof);
        bytes32 h = _hash(uStar);
        if (h != leaf.uStarHash) revert WitnessMismatch(h, leaf.uStarHash);
        if (leaf.p != 0) {
            if (prev.i != leaf.i || prev.p + 1 != leaf.p) revert BadProof(index);
            _leafAt(c, t, prev, prevProof);
            h = _hash(uPrev);
            if (h != prev.iterateHash) revert WitnessMismatch(h, prev.iterateHash);
        }
        Fraud f;
        if (!_signedOrSilent(leaf, prev.iterateHash)) f = Fraud.Signature;
        else try this.reexecute(leaf.i, leaf.p, uStar, uPrev) returns (uint256 th2, bytes32 hc) {
            if (hc != leaf.iterateHash) f = Fraud.Combination;
            else if (th2 != leaf.theta2) f = Fraud.Theta;
        } catch (bytes memory err) {
            bytes4 sel;
            if (err.length >= 4) {
                assembly {
                    sel := mload(add(err, 32))
                }
            }
            if (sel == OutOfBounds.selector) f = Fraud.Bounds;
            else if (sel == BadLength.selector) f = Fraud.Malformed;
            else {
                assembly {
                    revert(add(err, 32), mload(err))
                }
            }
        }
        _settle(t, c, f, UPDATE, leaf.p, leaf.i);
    }

    /// @notice Challenge iteration p as a whole: its P leaves (i = 0..P-1, with proofs) must
    /// carry max theta^2 = max_i theta_i^2 and the stop rule's decision
    /// (p == pMax or (p >= 1 and max theta^2 <= kappa^2)), which must be "stop" exactly at the
    /// committed lastP. Send `challengeBond` with it.
    function challengeIteration(uint32 t, Leaf[] calldata leaves, bytes32[][] calldata proofs) external payable {
        Commitment memory c = _pending(t);
        uint256 np = nProsumers;
        if (leaves.length != np || proofs.length != np) revert BadLength(leaves.length, np);
        uint256 p = leaves[0].p;
        uint256 m;
        for (uint256 i; i < np; ++i) {
            Leaf calldata l = leaves[i];
            if (l.i != i || l.p != p) revert BadProof(p * np + i);
            _leafAt(c, t, l, proofs[i]);
            if (l.theta2 > m) m = l.theta2;
        }
        bool rule = p == pMax || (p != 0 && m <= kappa2);
        Fraud f = rule != (p == c.lastP) ? Fraud.Stop : Fraud.None;
        for (uint256 i; i < np && f == Fraud.None; ++i) {
            if (leaves[i].maxTheta2 != m || leaves[i].stop != rule) f = Fraud.Stop;
        }
        _settle(t, c, f, ITERATION, p, type(uint256).max);
    }

    /// @notice Challenge the applied inputs of prosumer i: they must be lane k = 0 of every block
    /// of its final committed iterate u_i^lastP (leaf (lastP, i), whose vector is `uLast`).
    /// Send `challengeBond` with it.
    function challengeApplied(
        uint32 t,
        uint32 i,
        bytes calldata applied,
        bytes32[] calldata proof,
        Leaf calldata last,
        bytes32[] calldata lastProof,
        bytes calldata uLast
    ) external payable {
        Commitment memory c = _pending(t);
        uint256 np = nProsumers;
        uint256 index = (uint256(c.lastP) + 1) * np + i;
        if (i >= np) revert BadProof(index);
        _verify(c, appliedLeaf(t, i, applied), index, proof);
        if (last.i != i || last.p != c.lastP) revert BadProof(uint256(c.lastP) * np + i);
        _leafAt(c, t, last, lastProof);
        bytes32 h = _hash(uLast);
        if (h != last.iterateHash) revert WitnessMismatch(h, last.iterateHash);
        uint256 N = horizon;
        uint256 nb = nu / N;
        Fraud f;
        if (applied.length != nb << 2 || uLast.length != nu << 2) {
            f = Fraud.Malformed;
        } else {
            for (uint256 j; j < nb; ++j) {
                if (bytes4(applied[j << 2:(j << 2) + 4]) != bytes4(uLast[(j * N) << 2:((j * N) << 2) + 4])) {
                    f = Fraud.Applied;
                    break;
                }
            }
        }
        _settle(t, c, f, APPLIED, c.lastP, i);
    }

    // ---------------------------------------------------------------- views

    /// @notice What FCMPCCoordinator computes for prosumer i's upload of `uStar` at iteration p
    /// (previous committed iterate `uPrev`): (theta^2, keccak256 of the committed iterate); at
    /// p = 0 (0, keccak256(uStar)) after the bounds check with trades 0. Reverts as the upload
    /// would: OutOfBounds, BadLength.
    function reexecute(uint256 i, uint256 p, bytes calldata uStar, bytes calldata uPrev)
        external
        view
        returns (uint256 th2, bytes32 h)
    {
        uint256 len = nu << 2;
        if (uStar.length != len) revert BadLength(uStar.length, len);
        uint256 b = packedBounds[i];
        if (p == 0) {
            _checkBounds(b & BT_MASK, uStar);
            return (0, _hash(uStar));
        }
        if (uPrev.length != len) revert BadLength(uPrev.length, len);
        return _combine(b, uStar, uPrev);
    }

    /// @notice EIP-712 domain separator: name "FCMPCCommitCoordinator", version "1", this chain
    /// and this contract.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @notice The digest prosumer l.i signs for its message of leaf l: EIP-712
    /// `Message(t, p, i, eb, eev, u)` with u the uploaded vector (keccak256(u) = l.uStarHash).
    function messageDigest(Leaf calldata l) public view returns (bytes32) {
        bytes32 sh = keccak256(abi.encode(MESSAGE_TYPEHASH, l.t, l.p, l.i, l.eb, l.eev, l.uStarHash));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), sh));
    }

    /// @notice Whether leaf l carries prosumer l.i's signature of its message (v 27 or 28, s in
    /// the lower half of the curve order, ecrecover = the prosumer's address).
    function isSigned(Leaf calldata l) public view returns (bool) {
        if ((l.v != 27 && l.v != 28) || uint256(l.s) > HALF_ORDER || l.i >= nProsumers) return false;
        address a = ecrecover(messageDigest(l), l.v, l.r, l.s);
        return a != address(0) && a == agents[l.i];
    }

    /// @notice Hash of an iteration leaf.
    function leafHash(Leaf calldata l) public pure returns (bytes32) {
        return keccak256(abi.encode(l));
    }

    /// @notice Hash of the applied-inputs leaf of prosumer i at step t.
    function appliedLeaf(uint32 t, uint32 i, bytes calldata applied) public pure returns (bytes32) {
        return keccak256(abi.encode(t, i, _hash(applied)));
    }

    /// @notice Depth of the tree of a step that stopped at lastP ((lastP + 2) * P leaves, padded).
    function depth(uint256 lastP) public view returns (uint256 d) {
        uint256 n = (lastP + 2) * nProsumers;
        while ((uint256(1) << d) < n) ++d;
    }

    /// @notice Whether step t's commitment is final (finalized, or pending past its window).
    function isFinal(uint32 t) external view returns (bool) {
        Commitment memory c = commitments[t];
        return c.status == FINAL || (c.status == PENDING && block.timestamp > uint256(c.postedAt) + period);
    }

    // ---------------------------------------------------------------- internals

    function _pending(uint32 t) internal view returns (Commitment memory c) {
        c = commitments[t];
        if (c.status != PENDING) revert NotPending(t, c.status);
        uint256 end = uint256(c.postedAt) + period;
        if (block.timestamp > end) revert WindowClosed(end, block.timestamp);
        if (msg.value != challengeBond) revert WrongBond(msg.value, challengeBond);
    }

    /// @dev Verify iteration leaf `l` of step t at its position p * P + i; returns the position.
    function _leafAt(Commitment memory c, uint32 t, Leaf calldata l, bytes32[] calldata proof)
        internal
        view
        returns (uint256 index)
    {
        index = uint256(l.p) * nProsumers + l.i;
        if (l.t != t || l.p > c.lastP || l.i >= nProsumers) revert BadProof(index);
        _verify(c, keccak256(abi.encode(l)), index, proof);
    }

    /// @dev Signed by its prosumer, or unsigned (v = 0) with a silent prosumer's default: at p = 0
    /// the zero plan and eb = eev = 0, at p >= 1 uStar = the previous iterate (`prevIterate`).
    function _signedOrSilent(Leaf calldata l, bytes32 prevIterate) internal view returns (bool) {
        if (l.v != 0) return isSigned(l);
        if (l.p == 0) return l.uStarHash == zeroHash && l.eb == 0 && l.eev == 0;
        return l.uStarHash == prevIterate;
    }

    function _verify(Commitment memory c, bytes32 leaf, uint256 index, bytes32[] calldata proof) internal view {
        if (proof.length != depth(c.lastP)) revert BadProof(index);
        bytes32 h = leaf;
        uint256 k = index;
        for (uint256 j; j < proof.length; ++j) {
            bytes32 s = proof[j];
            assembly {
                switch and(k, 1)
                case 0 {
                    mstore(0, h)
                    mstore(32, s)
                }
                default {
                    mstore(0, s)
                    mstore(32, h)
                }
                h := keccak256(0, 64)
            }
            k >>= 1;
        }
        if (h != c.root) revert BadProof(index);
    }

    function _hash(bytes calldata u) internal pure returns (bytes32 h) {
        assembly {
            let m := mload(0x40)
            calldatacopy(m, u.offset, u.length)
            h := keccak256(m, u.length)
        }
    }

    function _settle(uint32 t, Commitment memory c, Fraud f, uint8 kind, uint256 p, uint256 i) internal {
        if (f != Fraud.None) {
            commitments[t].status = SLASHED;
            uint256 reward = bond / 2;
            credit[msg.sender] += msg.value + reward;
            burned += bond - reward;
            emit Slashed(t, c.committer, msg.sender, uint8(f), p, i);
        } else {
            credit[c.committer] += msg.value;
            emit ChallengeRejected(t, msg.sender, kind, p, i);
        }
    }
}
