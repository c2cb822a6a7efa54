import torch

from tdaeval.tasks import LinearRegressionTask


def test_closed_form_loo_equals_retraining():
    task = LinearRegressionTask(n_train=25, n_test=6, n_features=3, ridge=0.1)
    all_idx = torch.arange(task.n_train)
    base = task.measure(task.train(task.build_model(0), all_idx, 0))
    retrained = torch.stack(
        [task.measure(task.train(task.build_model(0), all_idx[all_idx != i], 0)) - base for i in range(task.n_train)],
        dim=1,
    )
    torch.testing.assert_close(task.loo_effects().float(), retrained, atol=1e-5, rtol=1e-4)


def test_exact_solver_matches_numpy_lstsq():
    task = LinearRegressionTask(n_train=30, n_test=5, ridge=1e-9)
    model = task.train(task.build_model(0), torch.arange(30), 0)
    design = torch.cat([task.train_data.inputs, torch.ones(30, 1, dtype=torch.float64)], 1)
    expected = torch.linalg.lstsq(design, task.train_data.targets.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(model.weight.detach().squeeze(0), expected[:-1], atol=1e-6, rtol=1e-6)


def test_measurement_is_absolute_error_lower_is_better():
    task = LinearRegressionTask()
    assert task.higher_is_better is False
    out = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(task.measurement(out, torch.tensor([2.0, 2.5], dtype=torch.float64)), torch.tensor([1.0, 0.5], dtype=torch.float64))
