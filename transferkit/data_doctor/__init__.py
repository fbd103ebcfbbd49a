"""The data doctor: wrong labels, near-duplicates and leaks across splits, outliers,
class imbalance and what to label next, with a review page that writes a fixes file.

    result = doctor("data/pets", out_dir="doctor/pets")   # issues.json, review.html
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, dict.fromkeys(("DoctorResult", "doctor"),
                                               "transferkit.data_doctor.doctor"))
