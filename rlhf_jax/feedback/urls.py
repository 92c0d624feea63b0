"""URL routes: labeler pages, admin pages (/manage/), the Django admin (/admin/), login."""

from django.contrib.auth import views as auth_views
from django.urls import path

from rlhf_jax.feedback import admin, manage_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("next/", views.next_task, name="next"),
    path("a/<uuid:token>/", views.assignment, name="assignment"),
    path("manage/", manage_views.manage, name="manage"),
    path("manage/export/<str:what>.jsonl", manage_views.export, name="export"),
    path("manage/agreement/", manage_views.agreement, name="agreement"),
    path("manage/agreement.png", manage_views.agreement_png, name="agreement_png"),
    path("accounts/login/", auth_views.LoginView.as_view(
        template_name="feedback/login.html", redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
