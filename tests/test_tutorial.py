"""The tutorial's 2-3-2-2 sigmoid network, worked by hand.

Every expected number below is written out as a literal and derived in the
comments (computed once with 40-digit arithmetic and rounded to 17
significant digits), in the spirit of scikit-learn's worked MLP example.
Nothing here is recomputed by reference.py.

Tutorial symbols -> bpcore (array index = tutorial layer number - 1):
  i_n     -> X[:, n-1]
  net_ln  -> trace.net[l-1][:, n-1],   out_ln -> trace.out[l-1][:, n-1]
  w_lnd   -> net.weights[l-1][n-1, d-1]
  b_ln    -> net.biases[l-2][n-1]
  delta   -> grads.delta[l-1]  (dE/dnet)

Network: layer 1 = 2 inputs, layer 2 = 3 sigmoid, layer 3 = 2 sigmoid,
layer 4 = 2 sigmoid outputs; loss mse, E = 1/(2m) sum ||y - out||^2; m = 1.

  sigmoid(x) = 1 / (1 + e^-x),  sigmoid'(x) = out * (1 - out)

Inputs and targets:  i_1 = 0.5, i_2 = 1.0;  y_1 = 1, y_2 = 0.

Weights (row n = source neuron, column d = target neuron) and biases:
  W_1 = [[0.1, 0.3, 0.5],      b_2 = [0.1, 0.2, 0.3]
         [0.2, 0.4, 0.6]]
  W_2 = [[ 0.1, -0.2],         b_3 = [0.1, -0.1]
         [ 0.3,  0.4],
         [-0.5,  0.6]]
  W_3 = [[0.5, -0.5],          b_4 = [0.2, -0.2]
         [0.3,  0.7]]
"""

import numpy as np
import pytest

import bpcore

DTYPES = ("float32", "float64")

X = np.array([[0.5, 1.0]])
Y = np.array([[1.0, 0.0]])
W = [
    np.array([[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]]),
    np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]),
    np.array([[0.5, -0.5], [0.3, 0.7]]),
]
B = [np.array([0.1, 0.2, 0.3]), np.array([0.1, -0.1]), np.array([0.2, -0.2])]

# ---------------------------------------------------------------------------
# Forward pass.
#
# Layer 2: net_2d = sum_n i_n w_1nd + b_2d
#   net_21 = 0.5*0.1 + 1.0*0.2 + 0.1 = 0.05 + 0.2 + 0.1 = 0.35
#   net_22 = 0.5*0.3 + 1.0*0.4 + 0.2 = 0.15 + 0.4 + 0.2 = 0.75
#   net_23 = 0.5*0.5 + 1.0*0.6 + 0.3 = 0.25 + 0.6 + 0.3 = 1.15
#   out_21 = 1/(1 + e^-0.35) = 1/(1 + 0.704688) = 0.586618
#   out_22 = 1/(1 + e^-0.75) = 1/(1 + 0.472367) = 0.679179
#   out_23 = 1/(1 + e^-1.15) = 1/(1 + 0.316637) = 0.759511
NET2 = [0.35, 0.75, 1.15]
OUT2 = [0.58661757891733006, 0.67917869917539297, 0.75951091694911107]

# Layer 3: net_3d = sum_n out_2n w_2nd + b_3d
#   net_31 = 0.586618*0.1 + 0.679179*0.3 + 0.759511*(-0.5) + 0.1
#          = 0.0586618 + 0.2037536 - 0.3797555 + 0.1 = -0.0173401
#   net_32 = 0.586618*(-0.2) + 0.679179*0.4 + 0.759511*0.6 - 0.1
#          = -0.1173235 + 0.2716715 + 0.4557065 - 0.1 = 0.5100545
#   out_31 = 1/(1 + e^0.0173401) = 1/(1 + 1.017491) = 0.495665
#   out_32 = 1/(1 + e^-0.5100545) = 1/(1 + 0.600466) = 0.624819
NET3 = [-0.01734009083020464, 0.51005451405615782]
OUT3 = [0.49566508590995035, 0.62481925374881539]

# Layer 4 (output): net_4d = sum_n out_3n w_3nd + b_4d
#   net_41 = 0.495665*0.5 + 0.624819*0.3 + 0.2
#          = 0.2478325 + 0.1874458 + 0.2 = 0.6352783
#   net_42 = 0.495665*(-0.5) + 0.624819*0.7 - 0.2
#          = -0.2478325 + 0.4373735 - 0.2 = -0.0104591
#   out_41 = 1/(1 + e^-0.6352783) = 1/(1 + 0.529789) = 0.653685
#   out_42 = 1/(1 + e^0.0104591)  = 1/(1 + 1.010514) = 0.497385
NET4 = [0.63527831907961979, -0.010459065330804404]
OUT4 = [0.65368533969466161, 0.49738525750325841]

# Loss: E = 1/(2m) * [(y_1 - out_41)^2 + (y_2 - out_42)^2], m = 1
#   = 0.5 * [(1 - 0.653685)^2 + (0 - 0.497385)^2]
#   = 0.5 * [0.1199340 + 0.2473919] = 0.5 * 0.3673259 = 0.1836630
LOSS = 0.1836629691619923

# ---------------------------------------------------------------------------
# Backward pass: delta_ln = dE/dnet_ln.
#
# Output layer: dE/dout_4d = (out_4d - y_d) / m, delta_4d = dE/dout_4d * f'
#   dE/dout_41 = 0.653685 - 1 = -0.346315;  f' = 0.653685*0.346315 = 0.226381
#   dE/dout_42 = 0.497385 - 0 =  0.497385;  f' = 0.497385*0.502615 = 0.249993
#   delta_41 = -0.346315 * 0.226381 = -0.0783990
#   delta_42 =  0.497385 * 0.249993 =  0.1243429
DELTA4 = [-0.078398995518375532, 0.12434291381332877]

# Layer 3: dE/dout_3n = sum_d delta_4d w_3nd, delta_3n = dE/dout_3n * f'
#   dE/dout_31 = -0.0783990*0.5 + 0.1243429*(-0.5) = -0.1013710
#   dE/dout_32 = -0.0783990*0.3 + 0.1243429*0.7    =  0.0635203
#   f'_31 = 0.495665*0.504335 = 0.2499812
#   f'_32 = 0.624819*0.375181 = 0.2344202
#   delta_31 = -0.1013710 * 0.2499812 = -0.02534083
#   delta_32 =  0.0635203 * 0.2344202 =  0.01489045
DELTA3 = [-0.025340833756178812, 0.014890448115832336]

# Layer 2: dE/dout_2n = sum_d delta_3d w_2nd, delta_2n = dE/dout_2n * f'
#   dE/dout_21 = -0.02534083*0.1  + 0.01489045*(-0.2) = -0.00551217
#   dE/dout_22 = -0.02534083*0.3  + 0.01489045*0.4    = -0.00164607
#   dE/dout_23 = -0.02534083*(-0.5) + 0.01489045*0.6  =  0.02160469
#   f'_21 = 0.586618*0.413382 = 0.2424974
#   f'_22 = 0.679179*0.320821 = 0.2178950
#   f'_23 = 0.759511*0.240489 = 0.1826541
#   delta_21 = -0.00551217 * 0.2424974 = -0.00133669
#   delta_22 = -0.00164607 * 0.2178950 = -0.00035867
#   delta_23 =  0.02160469 * 0.1826541 =  0.00394618
DELTA2 = [-0.0013366875931185671, -0.00035867060424256365,
          0.003946184084993017]

# Input layer (no activation): delta_1n = dE/di_n = sum_d delta_2d w_1nd
#   delta_11 = -0.00133669*0.1 - 0.00035867*0.3 + 0.00394618*0.5 = 0.00173182
#   delta_12 = -0.00133669*0.2 - 0.00035867*0.4 + 0.00394618*0.6 = 0.00195690
DELTA1 = [0.0017318221019118827, 0.0019569046906750713]

# Weight gradients: dE/dw_lnd = out_ln * delta_(l+1)d (summed over samples;
# here one sample). Bias gradients: dE/db_ld = delta_ld.
#   dW_1[n, d] = i_n * delta_2d:
#     row 1 (i_1 = 0.5): 0.5*[-0.00133669, -0.00035867, 0.00394618]
#     row 2 (i_2 = 1.0): 1.0*[-0.00133669, -0.00035867, 0.00394618]
DW1 = [[-0.00066834379655928355, -0.00017933530212128182,
        0.0019730920424965085],
       [-0.0013366875931185671, -0.00035867060424256365,
        0.003946184084993017]]
#   dW_2[n, d] = out_2n * delta_3d, delta_3 = [-0.02534083, 0.01489045]:
#     row 1: 0.586618*delta_3 = [-0.01486538, 0.00873500]
#     row 2: 0.679179*delta_3 = [-0.01721095, 0.01011328]
#     row 3: 0.759511*delta_3 = [-0.01924664, 0.01130946]
DW2 = [[-0.014865378545796166, 0.008734998622703684],
       [-0.017210954506541413, 0.010113275181449687],
       [-0.019246639882410356, 0.011309457902238981]]
#   dW_3[n, d] = out_3n * delta_4d, delta_4 = [-0.0783990, 0.1243429]:
#     row 1: 0.495665*delta_4 = [-0.0388596, 0.0616324]
#     row 2: 0.624819*delta_4 = [-0.0489852, 0.0776918]
DW3 = [[-0.038859644848869421, 0.061632441057577157],
       [-0.048985201874448122, 0.077691846617797351]]

# ---------------------------------------------------------------------------
# One SGD step with lr = 0.5: p_new = p - 0.5 * dE/dp.
#   W_1: 0.1 - 0.5*(-0.00066834) = 0.10033417,  0.3 + 0.5*0.00017934 ...
NEW_W = [
    [[0.10033417189827964, 0.30008966765106064, 0.49901345397875175],
     [0.20066834379655928, 0.40017933530212128, 0.59802690795750349]],
    #   W_2: 0.1 + 0.5*0.01486538 = 0.10743269, -0.2 - 0.5*0.00873500 ...
    [[0.10743268927289808, -0.20436749931135184],
     [0.30860547725327071, 0.39494336240927516],
     [-0.49037668005879482, 0.59434527104888051]],
    #   W_3: 0.5 + 0.5*0.0388596 = 0.5194298, -0.5 - 0.5*0.0616324 ...
    [[0.51942982242443471, -0.53081622052878858],
     [0.32449260093722406, 0.66115407669110132]],
]
#   b_2 = [0.1, 0.2, 0.3] - 0.5*delta_2
#       = [0.1 + 0.00066834, 0.2 + 0.00017934, 0.3 - 0.00197309]
#   b_3 = [0.1, -0.1] - 0.5*delta_3 = [0.1 + 0.01267042, -0.1 - 0.00744522]
#   b_4 = [0.2, -0.2] - 0.5*delta_4 = [0.2 + 0.0391995, -0.2 - 0.0621715]
NEW_B = [
    [0.10066834379655928, 0.20017933530212128, 0.29802690795750349],
    [0.11267041687808941, -0.10744522405791617],
    [0.23919949775918777, -0.26217145690666438],
]


def tutorial_net(dtype, make_net):
    return make_net([2, 3, 2, 2], W, B, activation="sigmoid",
                    output="sigmoid", loss="mse", dtype=dtype)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


def test_forward_per_layer(dtype, make_net, tol):
    net = tutorial_net(dtype, make_net)
    trace = net.forward(X)
    assert len(trace.net) == len(trace.out) == 4
    np.testing.assert_array_equal(trace.net[0], X.astype(dtype))
    np.testing.assert_array_equal(trace.out[0], X.astype(dtype))
    for l, (net_l, out_l) in enumerate([(NET2, OUT2), (NET3, OUT3),
                                        (NET4, OUT4)], start=2):
        np.testing.assert_allclose(trace.net[l - 1], [net_l], **tol(dtype),
                                   err_msg=f"net_{l}")
        np.testing.assert_allclose(trace.out[l - 1], [out_l], **tol(dtype),
                                   err_msg=f"out_{l}")
    np.testing.assert_allclose(net.predict(X), [OUT4], **tol(dtype))


def test_loss(dtype, make_net, tol):
    net = tutorial_net(dtype, make_net)
    np.testing.assert_allclose(net.evaluate(X, Y), LOSS, **tol(dtype))
    np.testing.assert_allclose(net.backward(X, Y).loss, LOSS, **tol(dtype))


def test_deltas(dtype, make_net, tol):
    net = tutorial_net(dtype, make_net)
    grads = net.backward(X, Y)
    assert len(grads.delta) == 4
    for l, expected in enumerate([DELTA1, DELTA2, DELTA3, DELTA4], start=1):
        np.testing.assert_allclose(grads.delta[l - 1], [expected],
                                   **tol(dtype), err_msg=f"delta_{l}")


def test_weight_and_bias_gradients(dtype, make_net, tol):
    net = tutorial_net(dtype, make_net)
    grads = net.backward(X, Y)
    for k, expected in enumerate([DW1, DW2, DW3]):
        np.testing.assert_allclose(grads.weights[k], expected, **tol(dtype),
                                   err_msg=f"dW_{k + 1}")
    for k, expected in enumerate([DELTA2, DELTA3, DELTA4]):
        np.testing.assert_allclose(grads.biases[k], expected, **tol(dtype),
                                   err_msg=f"db_{k + 2}")


def test_one_sgd_step(dtype, make_net, tol):
    net = tutorial_net(dtype, make_net)
    loss = net.step(X, Y, bpcore.SGD(lr=0.5))
    # step returns the loss before the update.
    np.testing.assert_allclose(loss, LOSS, **tol(dtype))
    for k in range(3):
        np.testing.assert_allclose(net.weights[k], NEW_W[k], **tol(dtype),
                                   err_msg=f"W_{k + 1}")
        np.testing.assert_allclose(net.biases[k], NEW_B[k], **tol(dtype),
                                   err_msg=f"b_{k + 2}")


def test_two_identical_samples(dtype, make_net, tol):
    # With the same sample twice (m = 2), E = 1/(2*2) * 2 * ||y - out||^2 is
    # unchanged, so are dE/dW and dE/db (each sample contributes half), but
    # each row of delta = dE/dnet is half the one-sample value.
    net = tutorial_net(dtype, make_net)
    grads = net.backward(np.vstack([X, X]), np.vstack([Y, Y]))
    np.testing.assert_allclose(grads.loss, LOSS, **tol(dtype))
    for k, expected in enumerate([DELTA1, DELTA2, DELTA3, DELTA4]):
        np.testing.assert_allclose(grads.delta[k],
                                   0.5 * np.array([expected, expected]),
                                   **tol(dtype))
    for k, expected in enumerate([DW1, DW2, DW3]):
        np.testing.assert_allclose(grads.weights[k], expected, **tol(dtype))
    for k, expected in enumerate([DELTA2, DELTA3, DELTA4]):
        np.testing.assert_allclose(grads.biases[k], expected, **tol(dtype))


def test_zero_sample_weight_ignores_a_sample(dtype, make_net, tol):
    # sample_weight = [3, 0] on (sample, another sample): the weighted mean
    # sum(s_i l_i) / sum(s_i) = (3*l_1 + 0*l_2) / 3 = l_1, so the result is
    # the one-sample tutorial whatever the second sample is.
    net = tutorial_net(dtype, make_net)
    X2 = np.vstack([X, [[-2.0, 3.0]]])
    Y2 = np.vstack([Y, [[0.25, 0.75]]])
    grads = net.backward(X2, Y2, sample_weight=[3.0, 0.0])
    np.testing.assert_allclose(grads.loss, LOSS, **tol(dtype))
    for k, expected in enumerate([DW1, DW2, DW3]):
        np.testing.assert_allclose(grads.weights[k], expected, **tol(dtype))
    np.testing.assert_allclose(grads.delta[0][0], DELTA1, **tol(dtype))
    np.testing.assert_allclose(grads.delta[0][1], [0.0, 0.0], **tol(dtype))
