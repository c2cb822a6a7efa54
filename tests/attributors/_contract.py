"""What the registry-wide tests share: an attributor defined on some tasks only must refuse the others in one line."""

from __future__ import annotations

import pytest

from tdaeval.errors import AttributorError


def refuses(attributor, task) -> bool:
    """True when ``attributor`` says it cannot explain ``task`` (its :meth:`why_unsupported`), after checking that
    ``fit`` then raises an ``AttributorError`` with exactly that one line; False when it claims it can."""
    reason = attributor.why_unsupported(task, task.train_data)
    if reason is None:
        return False
    assert isinstance(reason, str) and reason and "\n" not in reason, reason
    with pytest.raises(AttributorError) as info:
        attributor.fit(task, task.build_model(0), task.train_data)
    assert str(info.value) == reason
    return True
